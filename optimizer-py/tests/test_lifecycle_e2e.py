"""End to end: the lifecycle commands against the real platform: a real nats-server with
JetStream (the executor's prompt registry, the monitor's figures) and every service in one Node
process, keys on. Publishes a version with a rollout, runs the pipeline through the gateway so
both arms serve, and drives versions / ab-report / promote / rollback / history through the CLI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from stack_support import running_platform, wait_for_the_registry
from test_e2e import ADMIN_KEY, ServicesHost

from elexirion_optimizer import GatewayClient
from elexirion_optimizer.cli import main
from elexirion_optimizer.generated.elexirion.v1 import gateway_pb2, gateway_pb2_grpc, prompts_pb2

pytestmark = pytest.mark.e2e

PIPELINE = "general"
STEP = "answer"
STATS_TIMEOUT_S = 30.0
RUNS = 16


@pytest.fixture
def platform(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[ServicesHost]:
    """nats-server and all five services in one Node process; both stopped at teardown."""
    with running_platform(tmp_path, free_port) as host:
        yield host


def cli_json(
    host: ServicesHost, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, Any, str]:
    """Runs the CLI with the admin key and --json; answers (exit code, parsed stdout, stderr)."""
    code = main(["--gateway", host.target, "--api-key", ADMIN_KEY, "--timeout", "20", *argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


def test_lifecycle_commands_against_the_platform(
    platform: ServicesHost, capsys: pytest.CaptureFixture[str]
) -> None:
    host = platform
    with GatewayClient(host.target, timeout=20, api_key=ADMIN_KEY) as gateway:
        wait_for_the_registry(gateway, PIPELINE)
        published = gateway.publish_prompt_version(
            PIPELINE,
            STEP,
            prompts_pb2.PromptTemplate(prompt="Answer briefly: {{inputs.message}}"),
            version_id="brief",
            source="manual",
            description="e2e",
            rollout_weight=0.5,
            reason="e2e rollout",
        )
        assert published.version.id == "brief"

        code, versions, err = cli_json(host, capsys, "versions", "--pipeline", PIPELINE)
        assert code == 0, err
        (step,) = [s for s in versions["steps"] if s["step"] == STEP]
        assert step["rollout"]["weights"] == {"yaml": 0.5, "brief": 0.5}
        assert [v["id"] for v in step["versions"]] == ["brief"]
        revision = step["revision"]

        # Both arms serve: sessions are sticky, so different sessions spread over the versions.
        served: dict[str, int] = {}
        for index in range(RUNS):
            run = gateway.execute_pipeline(
                PIPELINE, {"message": f"ping {index}"}, session_id=f"session-{index}"
            )
            (answer,) = [s for s in run.steps if s.name == STEP]
            served[answer.prompt_version] = served.get(answer.prompt_version, 0) + 1
        assert set(served) == {"yaml", "brief"}, served

    # The monitor counts the runs per version as their events arrive.
    deadline = time.monotonic() + STATS_TIMEOUT_S
    while True:
        code, report, err = cli_json(host, capsys, "ab-report", "--pipeline", PIPELINE, "--since", "1h")
        assert code == 0, err
        runs = {v["version"]: int(v.get("runs", 0)) for v in (report or {}).get("versions", [])}
        if runs == served:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"ab-report runs {runs} never matched the runs served {served}")
        time.sleep(0.5)
    (comparison,) = report["comparisons"]
    assert (comparison["candidate"], comparison["baseline"]) == ("brief", "yaml")

    # The same figures as tables.
    assert main(["--gateway", host.target, "--api-key", ADMIN_KEY, "ab-report", "--pipeline", PIPELINE]) == 0
    table = capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0] == f"{PIPELINE}.{STEP}"
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    assert rows["yaml"][1:3] == ["baseline", str(served["yaml"])]
    assert rows["brief"][1] == str(served["brief"])
    assert lines[4].startswith("  brief vs yaml: success +0.0 pts (p=")
    assert main(["--gateway", host.target, "--api-key", ADMIN_KEY, "versions"]) == 0
    table = capsys.readouterr().out
    assert f"{PIPELINE}.{STEP}  baseline yaml  revision {revision}" in table
    assert "weights: brief 50.0%, yaml 50.0%" in table
    assert "candidate: brief (no guard), since " in table

    # A stale revision is refused (exit 1), the current one promotes.
    code, _, err = cli_json(
        host, capsys, "promote", "--pipeline", PIPELINE, "--step", STEP, "--version", "brief",
        "--expected-revision", str(int(revision) + 100),
    )
    assert code == 1 and err.startswith("error: ABORTED: "), err
    code, promoted, err = cli_json(
        host, capsys, "promote", "--pipeline", PIPELINE, "--step", STEP, "--version", "brief",
        "--expected-revision", str(revision), "--reason", "won",
    )
    assert code == 0, err
    assert promoted["step"]["rollout"]["baseline"] == "brief"

    code, rolled, err = cli_json(
        host, capsys, "rollback", "--pipeline", PIPELINE, "--step", STEP, "--to", "yaml",
        "--reason", "back to the YAML prompt",
    )
    assert code == 0, err
    assert rolled["step"]["rollout"]["baseline"] == "yaml"

    code, history, err = cli_json(host, capsys, "history", "--pipeline", PIPELINE)
    assert code == 0, err
    actions = [(c["action"], c.get("version", ""), c.get("reason", "")) for c in history["changes"]]
    # Newest first; a rollback names the version rolled back from.
    assert actions[:3] == [
        ("rollback", "brief", "back to the YAML prompt"),
        ("promote", "brief", "won"),
        ("publish", "brief", "e2e rollout"),
    ], actions
    assert all(c.get("by") for c in history["changes"][:3])
    assert history["changes"][0]["after"]["baseline"] == "yaml"

    # A key without the prompts:write scope may read, not change: exit 1 naming the scope.
    with grpc.insecure_channel(host.target) as channel:
        created = gateway_pb2_grpc.GatewayStub(channel).CreateKey(
            gateway_pb2.CreateKeyRequest(name="reader", scopes=["pipelines"]),
            metadata=(("authorization", f"Bearer {ADMIN_KEY}"),),
            timeout=20,
        )
    reader = ["--gateway", host.target, "--api-key", created.secret]
    assert main([*reader, "versions", "--pipeline", PIPELINE]) == 0
    capsys.readouterr()
    code = main([*reader, "rollback", "--pipeline", PIPELINE, "--step", STEP])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith(
        "error: PERMISSION_DENIED: RollbackPrompt needs an API key with the 'prompts:write' scope: "
    ), err
    assert created.secret not in err

    # Without a key the gateway refuses: exit 1, one line.
    code = main(["--gateway", host.target, "versions"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: UNAUTHENTICATED: ") and len(err.splitlines()) == 1
