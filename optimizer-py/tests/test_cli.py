"""The CLI's lifecycle commands against an in-process gateway (gateway_fake): the requests they
send, their tables and JSON, and their exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from gateway_fake import FakeGateway, answer, fake_gateway, refuse  # noqa: F401 (fixture)
from google.protobuf import json_format, timestamp_pb2

from elexirion_optimizer.cli import main, parse_since
from elexirion_optimizer.generated.elexirion.v1 import monitor_pb2, prompts_pb2


def stamp(text: str) -> timestamp_pb2.Timestamp:
    value = timestamp_pb2.Timestamp()
    value.FromDatetime(datetime.fromisoformat(text))
    return value


STEP = prompts_pb2.PromptStep(
    pipeline="analysis",
    step="review",
    revision=12,
    updated_at=stamp("2026-11-30T10:00:00+00:00"),
    versions=[
        prompts_pb2.PromptVersion(
            id="v1",
            source="manual",
            description="tighter wording",
            created_by="alice",
            created_at=stamp("2026-11-29T09:00:00+00:00"),
        ),
        prompts_pb2.PromptVersion(
            id="v2",
            source="dspy:BootstrapFewShot",
            description="3 demos",
            scores={"dspy_dev": 0.91, "parity_dev": 0.89},
            created_by="optimizer",
            created_at=stamp("2026-11-30T09:30:00+00:00"),
        ),
    ],
    rollout=prompts_pb2.PromptRollout(
        baseline="v1",
        weights={"v1": 0.9, "v2": 0.1},
        candidate="v2",
        guard=prompts_pb2.PromptRolloutGuard(
            metric="score", score_name="correct", min_runs=30, significance=0.05, max_runs=300
        ),
        baseline_protected=True,
        started_at=stamp("2026-11-30T09:31:00+00:00"),
    ),
)

STATS = monitor_pb2.GetPromptVersionStatsResponse(
    versions=[
        monitor_pb2.PromptVersionStats(
            pipeline="analysis",
            step="review",
            version="v2",
            runs=40,
            success_rate=0.975,
            latency_p50_ms=812,
            latency_p95_ms=1630,
            cost_usd_mean=0.00042,
            score=monitor_pb2.ScoreSummary(count=35, mean=0.86, ci95_low=0.74, ci95_high=0.97),
        ),
        monitor_pb2.PromptVersionStats(
            pipeline="analysis",
            step="review",
            version="v1",
            runs=360,
            success_rate=0.95,
            latency_p50_ms=790,
            latency_p95_ms=1500,
            cost_usd_mean=0.00040,
            score=monitor_pb2.ScoreSummary(count=300, mean=0.71, ci95_low=0.66, ci95_high=0.76),
            baseline=True,
        ),
    ],
    comparisons=[
        monitor_pb2.PromptVersionComparison(
            pipeline="analysis",
            step="review",
            candidate="v2",
            baseline="v1",
            success_rate_delta=0.025,
            score_delta=0.15,
            latency_p50_delta_ms=22,
            cost_usd_mean_delta=0.00002,
            success_rate_p_value=0.52,
            score_p_value=0.012,
        )
    ],
)

RunCli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> RunCli:
    """Runs main() against the fake gateway; answers (exit code, stdout, stderr)."""
    monkeypatch.delenv("ELEXIRION_API_KEY", raising=False)
    monkeypatch.delenv("ELEXIRION_GATEWAY", raising=False)

    def run(*argv: str, gateway: str | None = None) -> tuple[int, str, str]:
        code = main(["--gateway", gateway or fake_gateway.target, "--timeout", "5", *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_versions_prints_each_steps_registry(cli: RunCli, fake_gateway: FakeGateway) -> None:
    fake_gateway.handlers["ListPromptVersions"] = answer(
        prompts_pb2.ListPromptVersionsResponse(steps=[STEP])
    )
    code, out, err = cli("versions", "--pipeline", "analysis")
    assert (code, err) == (0, "")
    assert fake_gateway.requests("ListPromptVersions") == [
        prompts_pb2.ListPromptVersionsRequest(pipeline="analysis")
    ]
    lines = out.splitlines()
    assert lines[0] == (
        "analysis.review  baseline v1 (protected)  revision 12  updated 2026-11-30 10:00:00"
    )
    assert lines[1] == "  weights: v1 90.0%, v2 10.0%"
    assert lines[2] == (
        "  candidate: v2, guard watching score correct, min 30 runs per arm, p < 0.05,"
        " max 300 runs, since 2026-11-30 09:31:00"
    )
    assert lines[3].split() == [
        "version", "weight", "source", "created", "(UTC)", "by", "scores", "description"
    ]
    assert lines[4].split()[:3] == ["v1", "90.0%", "manual"]
    assert "dspy_dev 0.91, parity_dev 0.89" in lines[5] and lines[5].split()[:2] == ["v2", "10.0%"]


def test_versions_json_is_the_gateways_answer(cli: RunCli, fake_gateway: FakeGateway) -> None:
    response = prompts_pb2.ListPromptVersionsResponse(steps=[STEP])
    fake_gateway.handlers["ListPromptVersions"] = answer(response)
    code, out, _ = cli("versions", "--json")
    assert code == 0
    parsed = json_format.ParseDict(json.loads(out), prompts_pb2.ListPromptVersionsResponse())
    assert parsed == response


def test_versions_with_nothing_published(cli: RunCli, fake_gateway: FakeGateway) -> None:
    fake_gateway.handlers["ListPromptVersions"] = answer(prompts_pb2.ListPromptVersionsResponse())
    code, out, _ = cli("versions")
    assert code == 0 and "no prompt versions published yet" in out


def test_ab_report_shows_versions_and_the_comparison(
    cli: RunCli, fake_gateway: FakeGateway
) -> None:
    fake_gateway.handlers["GetPromptVersionStats"] = answer(STATS)
    before = datetime.now(UTC)
    code, out, err = cli(
        "ab-report", "--pipeline", "analysis", "--score-name", "correct", "--since", "24h"
    )
    assert (code, err) == (0, "")
    (request,) = fake_gateway.requests("GetPromptVersionStats")
    assert (request.pipeline, request.step, request.score_name) == ("analysis", "", "correct")
    start = request.start_time.ToDatetime(tzinfo=UTC)
    assert before - timedelta(hours=24, seconds=5) <= start <= datetime.now(UTC) - timedelta(hours=24)

    lines = out.splitlines()
    assert lines[0] == "analysis.review"
    assert lines[1].split() == [
        "version", "runs", "success", "correct", "(95%", "CI)", "n", "p50", "ms", "p95", "ms",
        "cost/run",
    ]
    # The baseline first.
    assert lines[2].split() == [
        "v1", "baseline", "360", "95.0%", "0.71", "[0.66,", "0.76]", "300", "790", "1500",
        "$0.000400",
    ]
    assert lines[3].split() == [
        "v2", "40", "97.5%", "0.86", "[0.74,", "0.97]", "35", "812", "1630", "$0.000420"
    ]
    assert lines[4] == (
        "  v2 vs v1: success +2.5 pts (p=0.52), correct +0.15 (p=0.012), p50 +22 ms,"
        " cost/run +0.000020 $"
    )


def test_ab_report_json(cli: RunCli, fake_gateway: FakeGateway) -> None:
    fake_gateway.handlers["GetPromptVersionStats"] = answer(STATS)
    code, out, _ = cli("ab-report", "--pipeline", "analysis", "--step", "review", "--json")
    assert code == 0
    assert json_format.ParseDict(json.loads(out), monitor_pb2.GetPromptVersionStatsResponse()) == STATS
    (request,) = fake_gateway.requests("GetPromptVersionStats")
    assert request.step == "review" and not request.HasField("start_time")


def test_a_bad_since_is_a_usage_error_before_any_call(
    cli: RunCli, fake_gateway: FakeGateway
) -> None:
    code, out, err = cli("ab-report", "--pipeline", "analysis", "--since", "yesterday")
    assert code == 2 and out == ""
    assert err == (
        "error: --since must be a duration like 30m, 24h, 7d or an ISO 8601 time,"
        " got 'yesterday'\n"
    )
    assert fake_gateway.servicer.calls == []


def test_parse_since() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-11-30T08:00:00", now) == datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert parse_since("2026-11-30T08:00:00+02:00", now) == datetime(2026, 11, 30, 6, tzinfo=UTC)


def test_promote_sends_the_change_and_prints_the_new_baseline(
    cli: RunCli, fake_gateway: FakeGateway
) -> None:
    promoted = prompts_pb2.PromptStep(
        pipeline="analysis",
        step="review",
        revision=13,
        rollout=prompts_pb2.PromptRollout(baseline="v2"),
    )
    fake_gateway.handlers["PromotePromptVersion"] = answer(
        prompts_pb2.PromotePromptVersionResponse(step=promoted)
    )
    code, out, err = cli(
        "--api-key", "elx_w_secret", "promote", "--pipeline", "analysis", "--step", "review",
        "--version", "v2", "--reason", "won the A/B", "--expected-revision", "12",
    )
    assert (code, err) == (0, "")
    assert fake_gateway.requests("PromotePromptVersion") == [
        prompts_pb2.PromotePromptVersionRequest(
            pipeline="analysis", step="review", version_id="v2", reason="won the A/B",
            expected_revision=12,
        )
    ]
    assert fake_gateway.servicer.calls[0].metadata["authorization"] == "Bearer elx_w_secret"
    assert out == "analysis.review: v2 is the baseline, serving every run (revision 13)\n"


def test_rollback_to_a_version(cli: RunCli, fake_gateway: FakeGateway) -> None:
    rolled = prompts_pb2.PromptStep(
        pipeline="analysis",
        step="review",
        revision=14,
        rollout=prompts_pb2.PromptRollout(baseline="yaml"),
    )
    fake_gateway.handlers["RollbackPrompt"] = answer(prompts_pb2.RollbackPromptResponse(step=rolled))
    code, out, _ = cli(
        "rollback", "--pipeline", "analysis", "--step", "review", "--to", "yaml", "--reason", "worse"
    )
    assert code == 0
    (request,) = fake_gateway.requests("RollbackPrompt")
    assert (request.to_version, request.reason, request.expected_revision) == ("yaml", "worse", 0)
    assert out == (
        "analysis.review: rolled back; yaml is the baseline (every run on yaml; revision 14)\n"
    )


@pytest.mark.parametrize(
    "code, details",
    [
        (grpc.StatusCode.ABORTED, "analysis.review changed: revision 13, not 12"),
        (grpc.StatusCode.NOT_FOUND, 'analysis.review has no version "v9"'),
        (grpc.StatusCode.FAILED_PRECONDITION, "the baseline is protected: promoting needs admin"),
    ],
)
def test_a_refused_change_exits_1_with_the_gateways_error(
    cli: RunCli, fake_gateway: FakeGateway, code: grpc.StatusCode, details: str
) -> None:
    fake_gateway.handlers["PromotePromptVersion"] = refuse(code, details)
    exit_code, out, err = cli(
        "promote", "--pipeline", "analysis", "--step", "review", "--version", "v9"
    )
    assert (exit_code, out) == (1, "")
    assert err == f"error: {code.name}: {details}\n"


def test_a_missing_scope_exits_1_naming_it(cli: RunCli, fake_gateway: FakeGateway) -> None:
    fake_gateway.handlers["RollbackPrompt"] = refuse(
        grpc.StatusCode.PERMISSION_DENIED, 'API key "ci" lacks the "prompts:write" scope'
    )
    code, _, err = cli("rollback", "--pipeline", "analysis", "--step", "review")
    assert code == 1
    assert err.startswith(
        "error: PERMISSION_DENIED: RollbackPrompt needs an API key with the 'prompts:write' scope"
    )
    assert len(err.splitlines()) == 1


def test_history_lists_changes_newest_first_up_to_the_limit(
    cli: RunCli, fake_gateway: FakeGateway
) -> None:
    changes = [
        prompts_pb2.PromptChange(
            pipeline="analysis",
            step="review",
            action="guard_promote",
            time=stamp("2026-11-30T12:00:00+00:00"),
            by="monitor",
            reason="score +0.15 (p=0.012)",
            before=prompts_pb2.PromptRollout(baseline="v1", weights={"v1": 0.9, "v2": 0.1}),
            after=prompts_pb2.PromptRollout(baseline="v2"),
            version="v2",
            revision=13,
        ),
        prompts_pb2.PromptChange(
            pipeline="analysis",
            step="review",
            action="publish",
            time=stamp("2026-11-30T09:30:00+00:00"),
            by="optimizer",
            after=prompts_pb2.PromptRollout(baseline="v1", weights={"v1": 0.9, "v2": 0.1}),
            version="v2",
            revision=12,
        ),
        prompts_pb2.PromptChange(action="publish", version="v1", revision=11),
    ]
    pages = {
        "": prompts_pb2.GetPromptHistoryResponse(changes=changes[:1], next_page_token="p2"),
        "p2": prompts_pb2.GetPromptHistoryResponse(changes=changes[1:], next_page_token="p3"),
    }
    fake_gateway.handlers["GetPromptHistory"] = lambda request, context: pages[request.page_token]
    code, out, err = cli("history", "--pipeline", "analysis", "--limit", "2")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["time", "(UTC)", "step", "action", "version", "by", "rollout", "reason"]
    assert lines[1].split() == [
        "2026-11-30", "12:00:00", "review", "guard_promote", "v2", "monitor", "baseline", "v1",
        "[v1", "90.0%,", "v2", "10.0%]", "->", "baseline", "v2", "score", "+0.15", "(p=0.012)",
    ]
    assert lines[2].split()[:6] == ["2026-11-30", "09:30:00", "review", "publish", "v2", "optimizer"]
    assert len(lines) == 3
    assert [r.page_token for r in fake_gateway.requests("GetPromptHistory")] == ["", "p2"]

    code, out, _ = cli("history", "--pipeline", "analysis", "--limit", "2", "--json")
    assert code == 0
    assert [c["revision"] for c in json.loads(out)["changes"]] == ["13", "12"]


def test_an_unreachable_gateway_exits_2_in_one_line(
    cli: RunCli, free_port: Callable[[], int]
) -> None:
    target = f"127.0.0.1:{free_port()}"
    code, out, err = cli("versions", gateway=target)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: UNAVAILABLE: cannot reach the gateway at {target}")
    assert len(err.splitlines()) == 1


def test_usage_errors_exit_2(cli: RunCli, fake_gateway: FakeGateway) -> None:
    assert cli("promote", "--pipeline", "analysis")[0] == 2
    assert cli("versions", "--step", "review")[0:3:2] == (2, "error: --step needs --pipeline\n")
    assert cli("history", "--pipeline", "analysis", "--limit", "0")[0] == 2
    assert cli()[0] == 2
    assert fake_gateway.servicer.calls == []


def test_gateway_and_key_come_from_the_environment(
    fake_gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ELEXIRION_GATEWAY", fake_gateway.target)
    monkeypatch.setenv("ELEXIRION_API_KEY", "elx_env_key")
    fake_gateway.handlers["ListPromptVersions"] = answer(prompts_pb2.ListPromptVersionsResponse())
    assert main(["versions"]) == 0
    assert fake_gateway.servicer.calls[0].metadata["authorization"] == "Bearer elx_env_key"
    assert "elx_env_key" not in capsys.readouterr().out


def test_python_dash_m_runs_the_cli(free_port: Callable[[], int]) -> None:
    target = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "elexirion_optimizer", "--gateway", target, "history",
         "--pipeline", "analysis"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: UNAVAILABLE: cannot reach the gateway at {target}")
    assert "Traceback" not in result.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(fake_gateway: FakeGateway) -> None:
    """`history | head -1`: more output than a pipe holds, the reader closes after one line."""
    changes = [
        prompts_pb2.PromptChange(
            pipeline="analysis", step="review", action="publish", version=f"v{n}", by="ci",
            reason="x" * 200, revision=n,
        )
        for n in range(1000, 0, -1)
    ]
    fake_gateway.handlers["GetPromptHistory"] = answer(
        prompts_pb2.GetPromptHistoryResponse(changes=changes)
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "elexirion_optimizer", "--gateway", fake_gateway.target, "history",
         "--pipeline", "analysis", "--limit", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().split()[:2] == [b"time", b"(UTC)"]
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(60) == 0, stderr
    assert stderr == b""
