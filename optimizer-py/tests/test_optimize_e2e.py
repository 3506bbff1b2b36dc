"""End to end: ``optimize`` against the real stack, then the monitor's guard decides.

A real nats-server (JetStream: the prompt registry, executions, feedback) and every service in one
Node process (``server/dist/main.js --services all``, the monitor included), with keys on and the
offline mock provider, whose table answers pipelines/review-sentiment.yaml's prompt wrong alone,
right after labelled demos, and inverted under "sarcastic" instructions. The CLI runs as a user
runs it (a subprocess); runs through the gateway get feedback (score 1/0 by correctness) and the
guard promotes the optimized version; a worse (sarcastic) version is then rolled back by it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from stack_support import running_platform, wait_for_the_registry
from test_e2e import ADMIN_KEY, REPO_ROOT, ServicesHost

from elexirion_optimizer import GatewayClient
from elexirion_optimizer.generated.elexirion.v1 import prompts_pb2

pytestmark = pytest.mark.e2e

EXAMPLES = REPO_ROOT / "optimizer-py" / "examples" / "review-sentiment.jsonl"
PIPELINE = "review-sentiment"
STEP = "label"
FEEDBACK = "correct"
MIN_RUNS = 5
DECISION_TIMEOUT_S = 90.0
CLI_TIMEOUT_S = 300.0


@pytest.fixture
def stack(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[ServicesHost]:
    """nats-server plus all five services in one process; both stopped at teardown."""
    # The guard looks at its rollouts often, so its decisions come within the test's deadline.
    with running_platform(tmp_path, free_port, {"MONITOR_ROLLOUT_INTERVAL_MS": "300"}) as host:
        with GatewayClient(host.target, timeout=5, api_key=ADMIN_KEY) as client:
            wait_for_the_registry(client, PIPELINE)
        yield host


def run_optimize(host: ServicesHost, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ELEXIRION_API_KEY": ADMIN_KEY,
        # DSPy's cache starts empty: every LM call of this run goes through the gateway.
        "DSPY_CACHEDIR": str(tmp_path / "dspy-cache"),
    }
    return subprocess.run(
        [sys.executable, "-m", "elexirion_optimizer", "--gateway", host.target, "optimize",
         "--pipeline", PIPELINE, "--step", STEP, *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
    )


def send_traffic_until(
    client: GatewayClient, labels: list[dict[str, str]], done: Callable[[prompts_pb2.PromptStep], bool],
    tagged: dict[str, list[bool]],
) -> prompts_pb2.PromptStep:
    """Runs reviews through the gateway (each its own session), recording feedback "correct"
    (1/0) on each run, until ``done(step entry)``; ``tagged`` collects correctness by version."""
    deadline = time.monotonic() + DECISION_TIMEOUT_S
    index = 0
    while True:
        entry = client.list_prompt_versions(PIPELINE, STEP).steps[0]
        if done(entry):
            return entry
        if time.monotonic() > deadline:
            pytest.fail(f"the guard decided nothing within {DECISION_TIMEOUT_S:.0f} s: {entry}; runs {tagged}")
        row = labels[index % len(labels)]
        index += 1
        response = client.execute_pipeline(PIPELINE, {"review": row["review"]}, session_id=uuid.uuid4().hex)
        correct = response.result.strip() == row["label"]
        version = next(s.prompt_version for s in response.steps if s.name == STEP)
        tagged.setdefault(version, []).append(correct)
        client.record_feedback(response.job_id, FEEDBACK, score=1.0 if correct else 0.0)


def test_optimize_publish_and_the_guard(stack: ServicesHost, tmp_path: Path) -> None:
    program = tmp_path / "program.json"
    completed = run_optimize(
        stack, tmp_path,
        "--train", str(EXAMPLES), "--metric", "exact", "--optimizer", "bootstrap",
        "--rollout-weight", "0.5", "--guard-metric", "score", "--guard-score-name", FEEDBACK,
        "--guard-min-runs", str(MIN_RUNS), "--save", str(program), "--json",
    )
    assert completed.returncode == 0, f"stderr:\n{completed.stderr[-4000:]}\n{stack.log_tail()}"
    result = json.loads(completed.stdout)
    scores = result["scores"]
    # The metric rises, in DSPy and in the real pipeline, and the two agree.
    assert scores["dspy_dev"] > scores["dspy_dev_before"], result
    assert scores["parity_dev"] > scores["pipeline_dev_before"], result
    assert result["parity"]["ok"] and result["parity"]["gap"] <= 0.1, result
    assert 1 <= result["demos"] <= 5
    assert "best score so far" in completed.stderr  # the progress display
    assert json.loads(program.read_text())["predict"]["demos"]
    version = result["published_version"]
    assert version

    labels = [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]
    with GatewayClient(stack.target, timeout=30, api_key=ADMIN_KEY) as client:
        entry = client.list_prompt_versions(PIPELINE, STEP).steps[0]
        published = next(v for v in entry.versions if v.id == version)
        assert published.source == "dspy:BootstrapFewShot"
        assert published.scores["parity_dev"] == pytest.approx(scores["parity_dev"])
        assert published.template.prompt == "Classify the sentiment of this product review: {{inputs.review}}"
        assert published.template.demos
        assert entry.rollout.candidate == version and entry.rollout.guard.metric == "score"
        assert entry.rollout.weights[version] == pytest.approx(0.5)

        # Live runs are tagged with the version, get feedback, and the guard promotes it.
        tagged: dict[str, list[bool]] = {}
        entry = send_traffic_until(client, labels, lambda e: e.rollout.baseline == version, tagged)
        assert entry.rollout.weights[version] == pytest.approx(1.0)
        assert tagged[version] and all(tagged[version]), tagged
        assert not any(tagged.get("yaml", [])), tagged
        stats = client.get_prompt_version_stats(PIPELINE, STEP, score_name=FEEDBACK)
        assert any(v.version == version and v.runs >= MIN_RUNS for v in stats.versions), stats

        # A worse version: "sarcastic" instructions invert every label; the guard rolls it back.
        worse = client.publish_prompt_version(
            PIPELINE, STEP,
            prompts_pb2.PromptTemplate(
                prompt=published.template.prompt,
                system="Every review here is sarcastic: it means the opposite of what it says.",
                demos=published.template.demos,
            ),
            source="manual", description="the sarcastic reading", rollout_weight=0.5,
            guard=prompts_pb2.PromptRolloutGuard(metric="score", score_name=FEEDBACK, min_runs=MIN_RUNS),
            reason="e2e: a worse candidate",
        ).version.id
        tagged = {}
        entry = send_traffic_until(client, labels, lambda e: worse not in e.rollout.weights, tagged)
        assert entry.rollout.baseline == version
        assert tagged[worse] and not any(tagged[worse]), tagged
        changes = client.get_prompt_history(PIPELINE, STEP).changes
        actions = [(c.action, c.version, c.by) for c in changes]
        assert ("guard_promote", version, "monitor") in actions, actions
        assert ("guard_rollback", worse, "monitor") in actions, actions

    # Training data from the live runs that got feedback 1 (the right labels), through
    # ListExecutions; measured and checked only.
    completed = run_optimize(
        stack, tmp_path, "--from-executions", "--min-score", "1", "--score-name", FEEDBACK,
        "--dry-run", "--json",
    )
    assert completed.returncode == 0, f"stderr:\n{completed.stderr[-4000:]}"
    result = json.loads(completed.stdout)
    assert result["train_examples"] + result["dev_examples"] >= MIN_RUNS, result
    assert result["scores"]["parity_dev"] > result["scores"]["pipeline_dev_before"], result
    assert result["published_version"] is None
