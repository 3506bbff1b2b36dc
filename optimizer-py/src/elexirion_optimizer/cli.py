"""``python -m elexirion_optimizer``: the optimizer and the prompt lifecycle from a shell.

Exit codes: 0 done, 1 the gateway refused (its error is printed), 2 a usage error or the gateway
could not be reached. Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from elexirion_optimizer import optimize_cli
from elexirion_optimizer.client import GatewayClient, GatewayError
from elexirion_optimizer.generated.elexirion.v1 import monitor_pb2, prompts_pb2

__all__ = ["main", "EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
DEFAULT_GATEWAY = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 60.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Statuses that mean no answer came from the gateway (a connection problem, not a refusal).
_NO_ANSWER = {grpc.StatusCode.DEADLINE_EXCEEDED}


class UsageError(Exception):
    """A bad argument found after parsing (exit 2)."""


Runner = Callable[[argparse.Namespace, GatewayClient], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default: sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse printed its usage message
        return int(exit_.code or 0)
    if args.timeout is not None and args.timeout <= 0:
        return _fail(f"--timeout must be a positive number of seconds, got {args.timeout}")
    run: Runner = args.run
    try:
        with GatewayClient(args.gateway, timeout=args.timeout, api_key=args.api_key) as gateway:
            return run(args, gateway)
    except UsageError as err:
        return _fail(str(err))
    except GatewayError as err:
        unreached = err.unreachable or err.code in _NO_ANSWER
        return _fail(str(err), EXIT_USAGE if unreached else EXIT_REFUSED)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        # The reader went away (`... history | head -1`): end quietly, as a Unix filter does,
        # with stdout pointed at /dev/null so the interpreter's final flush cannot fail too.
        _silence_stdout()
        return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m elexirion_optimizer",
        description="Optimize Elexirion pipeline prompts with DSPy and manage their rollouts.",
        epilog="Exit codes: 0 done, 1 refused by the gateway, 2 usage error or gateway unreachable.",
    )
    parser.add_argument(
        "--gateway",
        default=os.environ.get("ELEXIRION_GATEWAY") or DEFAULT_GATEWAY,
        metavar="HOST:PORT",
        help="the gateway's gRPC address (env ELEXIRION_GATEWAY; default %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("ELEXIRION_API_KEY") or None,
        metavar="KEY",
        help="API key (env ELEXIRION_API_KEY, preferred: a flag shows in the process list)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="deadline of each gateway call (default %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    versions = commands.add_parser(
        "versions", help="each step's prompt versions, baseline, weights, guard and revision"
    )
    versions.add_argument("--pipeline", default="", help="only this pipeline")
    versions.add_argument("--step", default="", help="only this step (with --pipeline)")
    _json_flag(versions)
    versions.set_defaults(run=run_versions)

    report = commands.add_parser(
        "ab-report", help="live figures per prompt version and each candidate against its baseline"
    )
    report.add_argument("--pipeline", required=True)
    report.add_argument("--step", default="", help="only this step")
    report.add_argument(
        "--score-name", default="", help="the feedback whose mean is compared (default thumbs)"
    )
    report.add_argument(
        "--since",
        default="",
        metavar="WHEN",
        help="runs since a duration ago (30m, 24h, 7d) or an ISO 8601 time (default: the monitor's)",
    )
    _json_flag(report)
    report.set_defaults(run=run_ab_report)

    promote = commands.add_parser("promote", help="make a version the baseline, serving every run")
    promote.add_argument("--pipeline", required=True)
    promote.add_argument("--step", required=True)
    promote.add_argument(
        "--version", required=True, dest="version_id", metavar="VERSION", help='a version id or "yaml"'
    )
    _change_flags(promote)
    promote.set_defaults(run=run_promote)

    rollback = commands.add_parser(
        "rollback", help="end a rollout (every run on the baseline) or go back to an earlier version"
    )
    rollback.add_argument("--pipeline", required=True)
    rollback.add_argument("--step", required=True)
    rollback.add_argument(
        "--to", default="", dest="to_version", metavar="VERSION", help='make this version (or "yaml") the baseline'
    )
    _change_flags(rollback)
    rollback.set_defaults(run=run_rollback)

    history = commands.add_parser("history", help="every change to a pipeline's prompts")
    history.add_argument("--pipeline", required=True)
    history.add_argument("--step", default="", help="only this step")
    history.add_argument("--limit", type=int, default=50, help="newest changes shown (default 50)")
    _json_flag(history)
    history.set_defaults(run=run_history)

    optimize_cli.register(commands)
    return parser


# --- Commands -------------------------------------------------------------------------------


def run_versions(args: argparse.Namespace, gateway: GatewayClient, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.step and not args.pipeline:
        raise UsageError("--step needs --pipeline")
    response = gateway.list_prompt_versions(args.pipeline, args.step)
    if args.json:
        return _print_json(response, out)
    if not response.steps:
        print("no prompt versions published yet (every step serves its YAML prompt)", file=out)
        return EXIT_OK
    for index, step in enumerate(response.steps):
        if index:
            print(file=out)
        _print_step(step, out)
    return EXIT_OK


def run_ab_report(args: argparse.Namespace, gateway: GatewayClient, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    since = parse_since(args.since) if args.since else None
    response = gateway.get_prompt_version_stats(
        args.pipeline, args.step, start_time=since, score_name=args.score_name
    )
    if args.json:
        return _print_json(response, out)
    score_name = args.score_name or "thumbs"
    if not response.versions:
        print(f"no runs of {args.pipeline} with a prompt version in this range", file=out)
        return EXIT_OK
    steps = sorted({(v.pipeline, v.step) for v in response.versions})
    for index, (pipeline, step) in enumerate(steps):
        if index:
            print(file=out)
        print(f"{pipeline}.{step}", file=out)
        versions = [v for v in response.versions if (v.pipeline, v.step) == (pipeline, step)]
        rows = [_stats_row(v) for v in sorted(versions, key=lambda v: (not v.baseline, v.version))]
        _print_table(
            ["version", "", "runs", "success", f"{score_name} (95% CI)", "n", "p50 ms", "p95 ms",
             "cost/run"],
            rows,
            out,
            indent="  ",
        )
        comparisons = [c for c in response.comparisons if (c.pipeline, c.step) == (pipeline, step)]
        for comparison in comparisons:
            print(f"  {_comparison_line(comparison, score_name)}", file=out)
    return EXIT_OK


def run_promote(args: argparse.Namespace, gateway: GatewayClient, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    response = gateway.promote_prompt_version(
        args.pipeline,
        args.step,
        args.version_id,
        reason=args.reason,
        expected_revision=args.expected_revision,
    )
    if args.json:
        return _print_json(response, out)
    step = response.step
    print(
        f"{step.pipeline}.{step.step}: {step.rollout.baseline} is the baseline, serving every run"
        f" (revision {step.revision})",
        file=out,
    )
    return EXIT_OK


def run_rollback(args: argparse.Namespace, gateway: GatewayClient, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    response = gateway.rollback_prompt(
        args.pipeline,
        args.step,
        to_version=args.to_version,
        reason=args.reason,
        expected_revision=args.expected_revision,
    )
    if args.json:
        return _print_json(response, out)
    step = response.step
    print(
        f"{step.pipeline}.{step.step}: rolled back; {step.rollout.baseline} is the baseline"
        f" ({_weights_text(step.rollout)}; revision {step.revision})",
        file=out,
    )
    return EXIT_OK


def run_history(args: argparse.Namespace, gateway: GatewayClient, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.limit <= 0:
        raise UsageError(f"--limit must be positive, got {args.limit}")
    changes = list(gateway.iter_prompt_history(args.pipeline, args.step, limit=args.limit))
    if args.json:
        print(
            json.dumps(
                {"changes": [_as_dict(change) for change in changes]}, indent=2, sort_keys=True
            ),
            file=out,
        )
        return EXIT_OK
    if not changes:
        print(f"no prompt changes recorded for {args.pipeline}", file=out)
        return EXIT_OK
    rows = [
        [
            _time_text(change.time),
            change.step,
            change.action,
            change.version or "-",
            change.by or "-",
            f"{_rollout_text(change.before)} -> {_rollout_text(change.after)}",
            change.reason or "-",
        ]
        for change in changes
    ]
    _print_table(["time (UTC)", "step", "action", "version", "by", "rollout", "reason"], rows, out)
    return EXIT_OK


# --- Argument helpers -----------------------------------------------------------------------


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30m``, ``24h``, ``7d``, ``2w`` ago, or an ISO 8601 time (UTC when it names no zone)."""
    match = _DURATION.match(text.strip())
    if match:
        amount, unit = float(match.group(1)), _DURATION_UNITS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--since must be a duration like 30m, 24h, 7d or an ISO 8601 time, got {text!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")


def _change_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", default="", help="why (kept in the history)")
    parser.add_argument(
        "--expected-revision",
        type=int,
        default=0,
        metavar="N",
        help="change only if the step is still at this revision (from `versions`)",
    )
    _json_flag(parser)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a file (a test's capture): nothing will flush to a closed pipe


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


# --- Output ---------------------------------------------------------------------------------


def _as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _print_json(message: Message, out: TextIO) -> int:
    print(json.dumps(_as_dict(message), indent=2, sort_keys=True), file=out)
    return EXIT_OK


def _print_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], out: TextIO, indent: str = ""
) -> None:
    table = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print((indent + "  ".join(cells)).rstrip(), file=out)


def _print_step(step: prompts_pb2.PromptStep, out: TextIO) -> None:
    rollout = step.rollout
    baseline = rollout.baseline or "yaml"
    protected = " (protected)" if rollout.baseline_protected else ""
    print(
        f"{step.pipeline}.{step.step}  baseline {baseline}{protected}  revision {step.revision}"
        f"  updated {_time_text(step.updated_at)}",
        file=out,
    )
    print(f"  weights: {_weights_text(rollout)}", file=out)
    if rollout.candidate:
        print(f"  candidate: {_candidate_text(rollout)}", file=out)
    weights = dict(rollout.weights)
    rows = [
        [
            version.id,
            _percent(weights[version.id]) if version.id in weights else "-",
            version.source or "-",
            _time_text(version.created_at),
            version.created_by or "-",
            ", ".join(f"{k} {v:.3g}" for k, v in sorted(version.scores.items())) or "-",
            version.description or "-",
        ]
        for version in step.versions
    ]
    if rows:
        _print_table(
            ["version", "weight", "source", "created (UTC)", "by", "scores", "description"],
            rows,
            out,
            indent="  ",
        )


def _weights_text(rollout: prompts_pb2.PromptRollout) -> str:
    if not rollout.weights:
        return f"every run on {rollout.baseline or 'yaml'}"
    return ", ".join(
        f"{version} {_percent(weight)}"
        for version, weight in sorted(rollout.weights.items(), key=lambda kv: (-kv[1], kv[0]))
    )


def _candidate_text(rollout: prompts_pb2.PromptRollout) -> str:
    guard = rollout.guard
    parts = [rollout.candidate or "-"]
    if not guard.metric:
        parts[0] += " (no guard)"
    else:
        metric = f"score {guard.score_name or 'thumbs'}" if guard.metric == "score" else guard.metric
        parts.append(f"guard watching {metric}")
        if guard.min_runs:
            parts.append(f"min {guard.min_runs} runs per arm")
        if guard.significance:
            parts.append(f"p < {guard.significance:g}")
        if guard.max_runs:
            parts.append(f"max {guard.max_runs} runs")
    if rollout.HasField("started_at"):
        parts.append(f"since {_time_text(rollout.started_at)}")
    return ", ".join(parts)


def _rollout_text(rollout: prompts_pb2.PromptRollout) -> str:
    if not rollout.baseline and not rollout.weights:
        return "-"
    text = f"baseline {rollout.baseline or 'yaml'}"
    if rollout.weights:
        text += f" [{_weights_text(rollout)}]"
    return text


def _stats_row(stats: monitor_pb2.PromptVersionStats) -> list[str]:
    score = stats.score
    if score.count:
        score_text = f"{score.mean:.3g} [{score.ci95_low:.3g}, {score.ci95_high:.3g}]"
    else:
        score_text = "-"
    return [
        stats.version,
        "baseline" if stats.baseline else "",
        str(stats.runs),
        _percent(stats.success_rate) if stats.runs else "-",
        score_text,
        str(score.count),
        f"{stats.latency_p50_ms:.0f}" if stats.runs else "-",
        f"{stats.latency_p95_ms:.0f}" if stats.runs else "-",
        f"${stats.cost_usd_mean:.6f}" if stats.runs else "-",
    ]


def _comparison_line(comparison: monitor_pb2.PromptVersionComparison, score_name: str) -> str:
    return (
        f"{comparison.candidate} vs {comparison.baseline}:"
        f" success {comparison.success_rate_delta * 100:+.1f} pts"
        f" (p={comparison.success_rate_p_value:.3g}),"
        f" {score_name} {comparison.score_delta:+.3g} (p={comparison.score_p_value:.3g}),"
        f" p50 {comparison.latency_p50_delta_ms:+.0f} ms,"
        f" cost/run {comparison.cost_usd_mean_delta:+.6f} $"
    )


def _percent(share: float) -> str:
    return f"{share * 100:.1f}%"


def _time_text(stamp: Any) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    when: datetime = stamp.ToDatetime(tzinfo=UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S")
