"""The ``optimize`` command: ``python -m elexirion_optimizer optimize --pipeline P --step S ...``.

Prints the before/after table on the held-out set (DSPy and the pipeline), the parity figures and
what was published; ``--json`` prints one JSON object instead. Progress goes to stderr.
Exit codes (the CLI's): 0 published (or written, or a dry run that passed), 1 refused (parity,
no gain, the gateway's refusal), 2 bad input, 130 interrupted (nothing published).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from elexirion_optimizer.client import GatewayError
from elexirion_optimizer.data import DataError
from elexirion_optimizer.export import ParityError
from elexirion_optimizer.metrics import MetricError
from elexirion_optimizer.optimize import (
    OPTIMIZERS,
    GuardOptions,
    NoGainError,
    OptimizeError,
    OptimizeOptions,
    OptionsError,
    OptimizeResult,
    PublishInterrupted,
    optimize,
)
from elexirion_optimizer.program import PipelineError

__all__ = ["register", "run", "options_from_args", "format_report"]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
GUARD_METRICS = ("success_rate", "score", "latency_p95_ms", "cost_usd_mean")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text}")
    return value


def register(commands: Any) -> None:
    """Adds ``optimize`` to the CLI's subparsers; its ``run(args, gateway) -> int`` is the command."""
    parser = commands.add_parser(
        "optimize",
        help="optimize a pipeline step's prompt with DSPy, check it in the pipeline, publish it",
        description=(
            "Compiles a DSPy program for one LLM step (its LM calls through Gateway.Complete),"
            " scores it before and after on held-out examples in DSPy and in the real pipeline,"
            " and publishes the winner as a prompt version at a rollout weight (or writes it into"
            " the pipeline's YAML)."
        ),
    )
    parser.add_argument("--pipeline", required=True, help="the pipeline's name")
    parser.add_argument("--step", required=True, help="the LLM step whose prompt is optimized")
    data = parser.add_argument_group("data")
    data.add_argument("--train", metavar="FILE.jsonl", help="training examples, one JSON object a line")
    data.add_argument("--dev", metavar="FILE.jsonl", help="held-out examples (default: a seeded split of --train)")
    data.add_argument("--dev-fraction", type=float, default=0.3, help="share held out when --dev is not given (default %(default)s)")
    data.add_argument("--seed", type=int, default=0, help="the split's and optimizers' seed (default %(default)s)")
    data.add_argument("--from-executions", action="store_true", help="examples from the pipeline's completed runs (ListExecutions)")
    data.add_argument("--min-score", type=float, help="with --from-executions: only runs whose feedback --score-name is at least this")
    data.add_argument("--score-name", default="", help="the feedback --min-score reads (default thumbs)")
    data.add_argument("--executions-limit", type=int, default=500, help="newest runs read (default %(default)s)")
    compile_ = parser.add_argument_group("optimizer")
    compile_.add_argument("--metric", default="exact", help="exact, contains, judge or module:function (default %(default)s)")
    compile_.add_argument("--optimizer", choices=OPTIMIZERS, default="bootstrap", help="(default %(default)s)")
    compile_.add_argument("--max-demos", type=int, default=5, help="bootstrapped demos at most (default %(default)s)")
    compile_.add_argument("--max-labeled-demos", type=int, default=4, help="labeled demos at most (default %(default)s)")
    compile_.add_argument("--candidates", type=int, default=6, help="random-search: candidate programs (default %(default)s)")
    compile_.add_argument("--judge-model", default="", help="judge: the rater's model alias (default: the step's)")
    compile_.add_argument("--judge-preset", default="")
    compile_.add_argument("--reflection-model", default="", help="gepa: the reflection LM's alias (default: the step's)")
    compile_.add_argument("--reflection-preset", default="")
    publish = parser.add_argument_group("publishing")
    publish.add_argument("--parity-threshold", type=float, default=0.1, help="largest gap allowed between the DSPy and pipeline scores (default %(default)s)")
    publish.add_argument("--rollout-weight", type=_fraction, default=0.1, help="share of runs the new version gets (default %(default)s; 0: published without traffic)")
    publish.add_argument("--guard-metric", choices=GUARD_METRICS, help="the rollout's guard: the metric the monitor watches")
    publish.add_argument("--guard-min-runs", type=int, default=0, help="runs per arm before a promotion (default: the monitor's, 30)")
    publish.add_argument("--guard-significance", type=float, default=0.0, help="p below which a decision is made (default: 0.05)")
    publish.add_argument("--guard-score-name", default="", help="with --guard-metric score: the feedback name (default thumbs)")
    publish.add_argument("--guard-max-runs", type=int, default=0, help="runs per arm after which no difference rolls back (default 10 x min runs)")
    publish.add_argument("--version-id", default="", help="the new version's id (default: the next v<N>)")
    publish.add_argument("--description", default="", help="what changed, for people")
    publish.add_argument("--save", metavar="PROGRAM.json", help="save the compiled DSPy program's state here")
    publish.add_argument("--write-yaml", metavar="PIPELINE.yaml", help="write the winner into this pipeline file (comments kept) instead of publishing")
    publish.add_argument("--dry-run", action="store_true", help="measure and check, publish nothing")
    parser.add_argument("--run-timeout", type=float, default=None, help="deadline of each pipeline run in seconds")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(run=run)


def options_from_args(args: argparse.Namespace) -> OptimizeOptions:
    return OptimizeOptions(
        pipeline=args.pipeline,
        step=args.step,
        metric=args.metric,
        optimizer=args.optimizer,
        train=args.train,
        dev=args.dev,
        dev_fraction=args.dev_fraction,
        seed=args.seed,
        from_executions=args.from_executions,
        min_score=args.min_score,
        score_name=args.score_name,
        executions_limit=args.executions_limit,
        max_demos=args.max_demos,
        max_labeled_demos=args.max_labeled_demos,
        candidates=args.candidates,
        judge_model=args.judge_model,
        judge_preset=args.judge_preset,
        reflection_model=args.reflection_model,
        reflection_preset=args.reflection_preset,
        parity_threshold=args.parity_threshold,
        rollout_weight=args.rollout_weight,
        guard=GuardOptions(
            metric=args.guard_metric or "",
            min_runs=args.guard_min_runs,
            significance=args.guard_significance,
            score_name=args.guard_score_name,
            max_runs=args.guard_max_runs,
        ),
        version_id=args.version_id,
        description=args.description,
        save=args.save,
        write_yaml=args.write_yaml,
        dry_run=args.dry_run,
        timeout=args.run_timeout,
    )


def format_report(result: OptimizeResult) -> str:
    """The before/after table, the parity line and what happened."""
    rows = [
        ("", "before", "after"),
        ("DSPy (in-process)", f"{result.dspy_before:.3f}", f"{result.dspy_after:.3f}"),
        ("pipeline (ExecutePipeline)", f"{result.pipeline_before:.3f}", f"{result.pipeline_after:.3f}"),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{result.spec.pipeline}.{result.spec.step}: {result.optimizer}, {result.train_size} training"
        f" / {result.dev_size} held-out examples, {result.demos} demos,"
        f" {result.elapsed_s:.1f} s",
        "",
    ]
    for row in rows:
        lines.append(f"  {row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}")
    parity = result.parity
    lines += [
        "",
        f"parity: DSPy {parity.dspy_score:.3f}, pipeline {parity.pipeline_score:.3f},"
        f" gap {parity.gap:.3f} (threshold {parity.threshold:.3f}): {'ok' if parity.ok else 'FAILED'}",
    ]
    if result.saved_path:
        lines.append(f"program saved to {result.saved_path}")
    if result.version is not None:
        rollout = result.rollout
        weight = rollout.weights.get(result.version.id, 0.0) if rollout is not None else 0.0
        guard = ""
        if rollout is not None and rollout.candidate == result.version.id and rollout.guard.metric:
            g = rollout.guard
            guard = (
                f", guarded by {g.metric}{'(' + g.score_name + ')' if g.score_name else ''}"
                f" (min {g.min_runs} runs a side, p < {g.significance:g})"
            )
        lines.append(
            f"published {result.spec.pipeline}.{result.spec.step} version {result.version.id}"
            f" at {weight:.0%} of runs against baseline {rollout.baseline if rollout else 'yaml'}{guard}"
        )
    elif result.yaml_path:
        lines.append(f"written into {result.yaml_path} (comments and layout kept)")
    else:
        lines.append("dry run: nothing was published")
    return "\n".join(lines)


def _fail(message: str, code: int, err: TextIO) -> int:
    print(f"error: {message}", file=err)
    return code


def run(
    args: argparse.Namespace,
    gateway: Any,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        options = options_from_args(args)
        result = optimize(gateway, options, log=None if args.json else err, progress_out=err)
    except PublishInterrupted as interrupted:
        return _fail(str(interrupted), EXIT_INTERRUPTED, err)
    except KeyboardInterrupt:
        # Publishing is optimize()'s last call; an interrupt before it changes nothing.
        return _fail("interrupted: nothing was published", EXIT_INTERRUPTED, err)
    except ParityError as refusal:
        if args.json:
            report = refusal.report
            json.dump({"error": str(refusal), "parity": {"dspy": report.dspy_score,
                       "pipeline": report.pipeline_score, "gap": report.gap,
                       "threshold": report.threshold, "ok": False}}, out, indent=2)
            out.write("\n")
        return _fail(str(refusal), EXIT_REFUSED, err)
    except NoGainError as refusal:
        return _fail(str(refusal), EXIT_REFUSED, err)
    except (DataError, PipelineError, MetricError) as bad:
        return _fail(str(bad), EXIT_USAGE, err)
    except OptionsError as bad:
        return _fail(str(bad), EXIT_USAGE, err)
    except OptimizeError as failed:
        message = str(failed)
        if "nothing was published" not in message:
            message += "; nothing was published"
        return _fail(message, EXIT_REFUSED, err)
    except GatewayError as refused:
        # Before the publish call, or the publish itself refused: either way nothing changed.
        code = EXIT_USAGE if getattr(refused, "unreachable", False) else EXIT_REFUSED
        return _fail(f"{refused}; nothing was published", code, err)
    if args.json:
        json.dump(result.to_json(), out, indent=2)
        out.write("\n")
    else:
        print(format_report(result), file=out)
    return EXIT_OK
