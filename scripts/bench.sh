#!/usr/bin/env bash
# npm run bench [-- --quick ...] (or bench:profile): set-up as for the tests, Debian's Chromium for the PNG chart
# when absent (as root), then the harness (bench/README.md).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ELEXIRION_ROOT"
bash scripts/setup.sh
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[elexirion] installing Debian's chromium for the benchmark chart" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2 || echo "[elexirion] chromium not installed: the chart stays HTML" >&2
fi
# Thousands of connections in flight need more than the default 1024 descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
entry=bench/src/main.ts
# npm run bench:profile: the CPU profile of the chain under load (bench/src/profile.ts).
if [ "${1:-}" = --profile ]; then shift; entry=bench/src/profile.ts; fi
exec node --disable-warning=ExperimentalWarning --import ./bench/src/ts-hooks.mjs "$entry" "$@"
