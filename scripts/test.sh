#!/usr/bin/env bash
# Runs every test: the TypeScript suites (vitest: kit units, service tests, integration tests
# with real nats-server and real service processes) and the Python optimizer's (pytest).
# Ends with one line: "N passed, N failed[, N skipped]". Exit status 0 only when nothing failed.
set -uo pipefail
source "$(dirname "$0")/env.sh"
cd "$ELEXIRION_ROOT"
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

results=test-results
rm -rf "$results" && mkdir -p "$results"

npx --no-install vitest run --reporter=default --reporter=json --outputFile.json="$results/vitest.json" "$@"
vitest_status=$?

optimizer-py/.venv/bin/python -m pytest optimizer-py/tests -q --junitxml="$results/pytest.xml"
pytest_status=$?

python3 - "$results" "$vitest_status" "$pytest_status" <<'PY'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
results, vitest_status, pytest_status = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
passed = failed = skipped = 0
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
