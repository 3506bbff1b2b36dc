#!/usr/bin/env bash
# Starts the whole product locally: nats-server with JetStream and the five services (one
# process each, or all in one process with --all-in-one), waits until every health check is
# SERVING, prints where to connect, and stops everything cleanly on Ctrl-C.
# Offline by default: with no provider API key set, the provider serves the mock model.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ELEXIRION_ROOT"

usage="usage: npm start [-- --all-in-one]"
all_in_one=false
for arg in "$@"; do
  case "$arg" in
    --all-in-one) all_in_one=true ;;
    -h|--help)
      cat <<TXT
$usage

Starts nats-server (JetStream, data in .data/nats) and the five services on 127.0.0.1, one process
each (--all-in-one: one process hosting them all), waits until every health check is SERVING, and
stops everything on Ctrl-C. Offline by default: with no provider API key the provider serves the
mock model. Ports, each checked before anything starts (set the variable to change it):
  NATS_PORT 4222 (or NATS_URL for a running server)
  GATEWAY_GRPC_PORT 50051, GATEWAY_HTTP_PORT 8080
  AGENT_GRPC_PORT 50052, AGENT_HTTP_PORT 8082          (not with --all-in-one)
  EXECUTOR_GRPC_PORT 50053, EXECUTOR_HTTP_PORT 8083    (not with --all-in-one)
  PROVIDER_GRPC_PORT 50054, PROVIDER_HTTP_PORT 8084    (not with --all-in-one)
  MONITOR_GRPC_PORT 50055, MONITOR_HTTP_PORT 8085      (not with --all-in-one)
The services read the rest of their environment as README.md, "Configuration", says.
TXT
      exit 0 ;;
    *) echo "unknown option: $arg ($usage)" >&2; exit 64 ;;
  esac
done

export BIND_HOST="${BIND_HOST:-127.0.0.1}"
export GATEWAY_GRPC_PORT="${GATEWAY_GRPC_PORT:-50051}" GATEWAY_HTTP_PORT="${GATEWAY_HTTP_PORT:-8080}"
export AGENT_GRPC_PORT="${AGENT_GRPC_PORT:-50052}" AGENT_HTTP_PORT="${AGENT_HTTP_PORT:-8082}"
export EXECUTOR_GRPC_PORT="${EXECUTOR_GRPC_PORT:-50053}" EXECUTOR_HTTP_PORT="${EXECUTOR_HTTP_PORT:-8083}"
export PROVIDER_GRPC_PORT="${PROVIDER_GRPC_PORT:-50054}" PROVIDER_HTTP_PORT="${PROVIDER_HTTP_PORT:-8084}"
export MONITOR_GRPC_PORT="${MONITOR_GRPC_PORT:-50055}" MONITOR_HTTP_PORT="${MONITOR_HTTP_PORT:-8085}"
NATS_PORT="${NATS_PORT:-4222}"
# API keys are off for a local run, said here and by the gateway at start; GATEWAY_AUTH=on (with
# GATEWAY_ADMIN_KEY to create the first keys) turns them on, as the Kubernetes manifests do.
export GATEWAY_AUTH="${GATEWAY_AUTH:-off}"
# The mock model answers in small pieces 30 ms apart, so a local chat shows its answer streaming
# in (and can be stopped); a real provider's pace replaces it when API keys are set.
export PROVIDER_MOCK_STREAM_CHUNK_DELAY_MS="${PROVIDER_MOCK_STREAM_CHUNK_DELAY_MS:-30}"

# Every port this run will listen on, checked before anything starts (and before the set-up,
# which can take a minute): a taken one is named with the variable that moves it.
port_variables=(GATEWAY_GRPC_PORT GATEWAY_HTTP_PORT)
$all_in_one || port_variables+=(AGENT_GRPC_PORT AGENT_HTTP_PORT EXECUTOR_GRPC_PORT EXECUTOR_HTTP_PORT PROVIDER_GRPC_PORT PROVIDER_HTTP_PORT MONITOR_GRPC_PORT MONITOR_HTTP_PORT)
[ -n "${NATS_URL:-}" ] || port_variables=(NATS_PORT "${port_variables[@]}")
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
problems=()
declare -A claimed=()
for variable in "${port_variables[@]}"; do
  port="${!variable}"
  if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    problems+=("$variable=$port is not a port number from 1 to 65535")
  elif [ -n "${claimed[$port]:-}" ]; then
    problems+=("$variable and ${claimed[$port]} are both $port: give each its own port")
  elif port_busy "$port"; then
    problems+=("port $port ($variable) is taken: stop what listens there, or set $variable to a free port")
  fi
  claimed[$port]="$variable"
done
if [ ${#problems[@]} -gt 0 ]; then
  for problem in "${problems[@]}"; do echo "[elexirion] $problem" >&2; done
  [ -n "${NATS_URL:-}" ] || echo "[elexirion] (NATS_URL instead of NATS_PORT uses a NATS server already running)" >&2
  exit 1
fi

bash scripts/setup.sh

# Children run in their own sessions (setsid), so Ctrl-C reaches only this script, which then
# drains the services (SIGTERM, gateway first) and stops NATS last.
pids=()
nats_pid=""
stop_all() {
  trap - INT TERM EXIT
  echo "[elexirion] stopping" >&2
  for (( i=${#pids[@]}-1; i>=0; i-- )); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$nats_pid" ]; then kill -TERM "$nats_pid" 2>/dev/null || true; wait "$nats_pid" 2>/dev/null || true; fi
  echo "[elexirion] stopped" >&2
}
trap stop_all EXIT
trap 'exit 130' INT TERM

if [ -z "${NATS_URL:-}" ]; then
  mkdir -p .data/nats
  setsid nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$ELEXIRION_ROOT/.data/nats" &
  nats_pid=$!
  export NATS_URL="nats://127.0.0.1:$NATS_PORT"
fi

health=server/dist/health-check.js
declare -A names=()
[ -z "$nats_pid" ] || names[$nats_pid]=nats-server
# PORT SERVICE...: waits until they serve, or stops at once when a process this script started
# exits first (a service that cannot start says why in its log, above).
await_serving() {
  local port=$1; shift
  node "$health" "127.0.0.1:$port" "$@" --timeout-ms 30000 &
  local check=$! finished="" status=0
  wait -n -p finished "$check" "${pids[@]}" ${nats_pid:+"$nats_pid"} || status=$?
  if [ "$finished" != "$check" ]; then
    kill "$check" 2>/dev/null || true
    echo "[elexirion] ${names[$finished]:-a process} exited (status $status) before $* served; its log above says why" >&2
    exit 1
  fi
  [ "$status" -eq 0 ] || exit 1
}
if $all_in_one; then
  setsid node server/dist/main.js --services all &
  pids+=($!); names[$!]="elexirion --services all"
  await_serving "$GATEWAY_GRPC_PORT" elexirion.v1.Gateway elexirion.v1.Agent elexirion.v1.Executor elexirion.v1.Provider elexirion.v1.Monitor
else
  for service in provider executor agent monitor gateway; do
    setsid node "services/$service/dist/main.js" &
    pids+=($!); names[$!]=$service
  done
  await_serving "$PROVIDER_GRPC_PORT" elexirion.v1.Provider
  await_serving "$EXECUTOR_GRPC_PORT" elexirion.v1.Executor
  await_serving "$AGENT_GRPC_PORT" elexirion.v1.Agent
  await_serving "$MONITOR_GRPC_PORT" elexirion.v1.Monitor
  await_serving "$GATEWAY_GRPC_PORT" elexirion.v1.Gateway
fi

cat >&2 <<TXT

[elexirion] ready ($($all_in_one && echo 'all services in one process' || echo 'one process per service'); all health checks SERVING)
  Open   http://127.0.0.1:$GATEWAY_HTTP_PORT/   in a browser: chat, jobs, prompts, dashboard
  gRPC   127.0.0.1:$GATEWAY_GRPC_PORT   grpcurl -plaintext -d '{"message":"hello"}' 127.0.0.1:$GATEWAY_GRPC_PORT elexirion.v1.Gateway/Chat
  HTTP   http://127.0.0.1:$GATEWAY_HTTP_PORT   curl -s -XPOST localhost:$GATEWAY_HTTP_PORT/v1/chat -H 'content-type: application/json' -d '{"message":"hello"}'
  NATS   $NATS_URL   (telemetry on elexirion.events.>, kept by stream ELEXIRION_EVENTS)
  Monitor  curl -s localhost:$GATEWAY_HTTP_PORT/v1/health   (metrics, executions, feedback, alerts: README.md, "Monitor")
  Keys   GATEWAY_AUTH=$GATEWAY_AUTH$([ "$GATEWAY_AUTH" = off ] && echo ' (no API key needed: local use only)' || echo ' (send authorization: Bearer <key>)')
  Ctrl-C stops everything.

TXT
# Stay up until a child exits or Ctrl-C.
wait -n "${pids[@]}" $nats_pid || true
echo "[elexirion] a process exited; stopping the rest" >&2
exit 1
