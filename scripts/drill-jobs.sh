#!/usr/bin/env bash
# npm run drill:jobs [-- --jobs N --replicas 2|3 ...]: the jobs' kill -9 drill (bench/src/drill-jobs.ts)
# against this checkout's build (npm run build first).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ELEXIRION_ROOT"
exec node --disable-warning=ExperimentalWarning --import ./bench/src/ts-hooks.mjs bench/src/drill-jobs.ts "$@"
