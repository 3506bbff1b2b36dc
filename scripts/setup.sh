#!/usr/bin/env bash
# Brings a fresh machine to a runnable, testable state; fast when nothing changed.
# Node 24 (scripts/env.sh), npm dependencies, nats-server, the Python venv, generated code, build.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ELEXIRION_ROOT"
log() { echo "[elexirion] $*" >&2; }

# npm dependencies: reinstall when the lock file changed since the last install.
stamp=node_modules/.elexirion-lock.sha
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
  log "installing npm dependencies"
  # Not `npm ci`: npm 11 leaves other platforms' optional packages (buf's) out of the lock file
  # and then refuses it; `install --no-save` installs exactly the lock and never rewrites it.
  npm install --no-save --no-audit --no-fund --loglevel=error >&2
  echo "$lock_sum" > "$stamp"
fi

# nats-server (Debian's, 2.9.x): installed with apt when absent and running as root.
if ! command -v nats-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing nats-server with apt"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server) >&2
  else
    log "nats-server is missing: install it (Debian: apt-get install nats-server) and retry"
    exit 1
  fi
fi

# Python optimizer venv and its generated stubs.
bash scripts/setup-python.sh

# Generated TypeScript and the compiled services.
log "building"
npm run --silent build >&2
