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
heap=()
# npm run bench:profile: CPU profiles or heap snapshots of the chain (bench/src/profile.ts); the
# snapshots of thousands of held runs are parsed in this process, which needs room for them.
if [ "${1:-}" = --profile ]; then shift; entry=bench/src/profile.ts; heap=(--max-old-space-size=8192); fi
exec node "${heap[@]}" --disable-warning=ExperimentalWarning --import ./bench/src/ts-hooks.mjs "$entry" "$@"
