#!/usr/bin/env bash
# Runs every test: the TypeScript suites (vitest: kit units, service tests, integration tests
# with real nats-server and real service processes), after a type check of them and the bench,
# and the Python optimizer's (pytest).
# Ends with one line: "N passed, N failed[, N skipped]". Exit status 0 only when nothing failed.
set -uo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  echo "usage: npm test [-- VITEST_ARGS...]   (e.g. npm test -- services/kit/test/host.test.ts)"
  echo "Type-checks the tests and the bench, runs the vitest suites (with VITEST_ARGS) and the optimizer's pytest suite."
  exit 0
fi
source "$(dirname "$0")/env.sh"
cd "$ELEXIRION_ROOT"
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

# The web pages' tests drive Debian's chromium (test/web); installed when absent and root. Without
# it those tests fail, saying so: they are never skipped.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[elexirion] installing Debian's chromium for the web pages' tests" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2 || echo "[elexirion] chromium could not be installed: the web tests will fail" >&2
fi

results=test-results
rm -rf "$results" && mkdir -p "$results"

# Vitest strips types without checking them: a test or the bench calling an API that no longer
# exists fails here, counted as one failure.
typecheck_status=0
npx --no-install tsc -p test && npx --no-install tsc -p bench || typecheck_status=1

npx --no-install vitest run --reporter=default --reporter=json --outputFile.json="$results/vitest.json" "$@"
vitest_status=$?

optimizer-py/.venv/bin/python -m pytest optimizer-py/tests -q --junitxml="$results/pytest.xml"
pytest_status=$?

python3 - "$results" "$vitest_status" "$pytest_status" "$typecheck_status" <<'PY'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
results, vitest_status, pytest_status, typecheck_status = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
passed = failed = skipped = 0
if typecheck_status != 0:
    failed += 1  # the tests' or the bench's types do not check (printed above)
try:
    data = json.loads((results / "vitest.json").read_text())
    passed += data["numPassedTests"]
    failed += data["numFailedTests"]
    skipped += data.get("numPendingTests", 0) + data.get("numTodoTests", 0)
    # A suite that failed to load has no tests to count, but it failed.
    failed += sum(1 for suite in data.get("testResults", []) if suite.get("status") == "failed" and not suite.get("assertionResults"))
except (OSError, ValueError, KeyError):
    failed += 1  # vitest did not report: count it as a failure
try:
    root = ET.parse(results / "pytest.xml").getroot()
    for suite in root.iter("testsuite"):
        tests, fails, errors, skips = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        passed += tests - fails - errors - skips
        failed += fails + errors
        skipped += skips
except (OSError, ET.ParseError):
    failed += 1
if failed == 0 and (vitest_status != 0 or pytest_status != 0):
    failed += 1  # a runner failed without a failing test (crash, hook error)
line = f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")
print(line)
sys.exit(1 if failed else 0)
PY
