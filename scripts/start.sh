#!/usr/bin/env bash
# Starts the whole product locally: nats-server with JetStream and the four services (one
# process each, or all in one process with --all-in-one), waits until every health check is
# SERVING, prints where to connect, and stops everything cleanly on Ctrl-C.
# Offline by default: with no provider API key set, the provider serves the mock model.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ELEXIRION_ROOT"

all_in_one=false
for arg in "$@"; do
  case "$arg" in
    --all-in-one) all_in_one=true ;;
    -h|--help) echo "usage: npm start [-- --all-in-one]"; exit 0 ;;
    *) echo "unknown option: $arg (usage: npm start [-- --all-in-one])" >&2; exit 64 ;;
  esac
done

bash scripts/setup.sh

export BIND_HOST="${BIND_HOST:-127.0.0.1}"
export GATEWAY_GRPC_PORT="${GATEWAY_GRPC_PORT:-50051}" GATEWAY_HTTP_PORT="${GATEWAY_HTTP_PORT:-8080}"
export AGENT_GRPC_PORT="${AGENT_GRPC_PORT:-50052}" EXECUTOR_GRPC_PORT="${EXECUTOR_GRPC_PORT:-50053}" PROVIDER_GRPC_PORT="${PROVIDER_GRPC_PORT:-50054}"
NATS_PORT="${NATS_PORT:-4222}"

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

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [ -z "${NATS_URL:-}" ]; then
  if port_busy "$NATS_PORT"; then
    echo "[elexirion] port $NATS_PORT is taken: stop what listens there, or set NATS_PORT (or NATS_URL for an existing server)" >&2
    exit 1
  fi
  mkdir -p .data/nats
  setsid nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$ELEXIRION_ROOT/.data/nats" &
  nats_pid=$!
  export NATS_URL="nats://127.0.0.1:$NATS_PORT"
fi

for port in "$GATEWAY_GRPC_PORT" "$GATEWAY_HTTP_PORT"; do
  if port_busy "$port"; then echo "[elexirion] port $port is taken (set GATEWAY_GRPC_PORT / GATEWAY_HTTP_PORT)" >&2; exit 1; fi
done

health=server/dist/health-check.js
if $all_in_one; then
  setsid node server/dist/main.js --services all &
  pids+=($!)
  node "$health" "127.0.0.1:$GATEWAY_GRPC_PORT" elexirion.v1.Gateway elexirion.v1.Agent elexirion.v1.Executor elexirion.v1.Provider --timeout-ms 30000
else
  for service in provider executor agent gateway; do
    setsid node "services/$service/dist/main.js" &
    pids+=($!)
  done
  node "$health" "127.0.0.1:$PROVIDER_GRPC_PORT" elexirion.v1.Provider --timeout-ms 30000
  node "$health" "127.0.0.1:$EXECUTOR_GRPC_PORT" elexirion.v1.Executor --timeout-ms 30000
  node "$health" "127.0.0.1:$AGENT_GRPC_PORT" elexirion.v1.Agent --timeout-ms 30000
  node "$health" "127.0.0.1:$GATEWAY_GRPC_PORT" elexirion.v1.Gateway --timeout-ms 30000
fi

cat >&2 <<TXT

[elexirion] ready ($($all_in_one && echo 'all services in one process' || echo 'one process per service'); all health checks SERVING)
  gRPC   127.0.0.1:$GATEWAY_GRPC_PORT   grpcurl -plaintext -d '{"message":"hello"}' 127.0.0.1:$GATEWAY_GRPC_PORT elexirion.v1.Gateway/Chat
  HTTP   http://127.0.0.1:$GATEWAY_HTTP_PORT   curl -s -XPOST localhost:$GATEWAY_HTTP_PORT/v1/chat -H 'content-type: application/json' -d '{"message":"hello"}'
  NATS   $NATS_URL   (telemetry on elexirion.events.>, kept by stream ELEXIRION_EVENTS)
  Ctrl-C stops everything.

TXT
# Stay up until a child exits or Ctrl-C.
wait -n "${pids[@]}" $nats_pid || true
echo "[elexirion] a process exited; stopping the rest" >&2
exit 1
