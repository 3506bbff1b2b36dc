"""``optimize`` as a library: one pipeline step's prompt, compiled by DSPy, checked, published.

:func:`optimize` reads the step from ``Gateway.GetPipeline``, builds its DSPy program on the
step's own model alias and preset (every LM call through ``Gateway.Complete``), compiles it with
the chosen optimizer on the training set, scores before and after on the held-out set in DSPy and
in the real pipeline (``ExecutePipeline`` with the exported prompt as the step's candidate), stops
when the two disagree beyond the parity threshold, and then publishes the winner as a prompt
version (one ``PublishPromptVersion`` call, at a rollout weight, with an optional guard) or writes
it into the pipeline's YAML. Nothing is published before every measurement is in: a failure or an
interrupt before that leaves serving untouched.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import dspy
from dspy.utils.callback import BaseCallback

from elexirion_optimizer import data as data_module
from elexirion_optimizer.export import (
    DEMOS,
    FOLDED,
    Evaluation,
    ParityReport,
    check_parity,
    evaluate_pipeline,
    evaluate_program,
    export_template,
)
from elexirion_optimizer.generated.elexirion.v1 import prompts_pb2
from elexirion_optimizer.metrics import make_metric
from elexirion_optimizer.program import (
    StepProgram,
    StepSpec,
    pipeline_inputs_for,
    step_spec_from_gateway,
)
from elexirion_optimizer.yaml_write import write_step_prompt

__all__ = [
    "OPTIMIZERS",
    "NoGainError",
    "OptimizeError",
    "OptimizeOptions",
    "OptimizeResult",
    "OptionsError",
    "PublishInterrupted",
    "ProgressDisplay",
    "optimize",
]

OPTIMIZERS = ("bootstrap", "random-search", "mipro", "gepa")
LmFactory = Callable[[str, str], dspy.BaseLM]


class OptimizeError(Exception):
    """The optimization stopped before publishing; the message says why (nothing was published)."""


class PublishInterrupted(KeyboardInterrupt):
    """Ctrl-C while the publish call was in flight: the server applies it whole or not at all."""

    def __str__(self) -> str:
        return (
            "interrupted while publishing: the publish is atomic, so the version and its rollout"
            " were either published whole or not at all; `versions` shows which"
        )


class OptionsError(OptimizeError):
    """Options that contradict each other or are out of range (named)."""


class NoGainError(OptimizeError):
    """The optimized prompt did not beat the starting one in the pipeline: nothing to publish."""


@dataclass
class GuardOptions:
    metric: str = ""
    min_runs: int = 0
    significance: float = 0.0
    score_name: str = ""
    max_runs: int = 0

    def proto(self) -> prompts_pb2.PromptRolloutGuard | None:
        if not self.metric:
            return None
        return prompts_pb2.PromptRolloutGuard(
            metric=self.metric,
            score_name=self.score_name,
            min_runs=self.min_runs,
            significance=self.significance,
            max_runs=self.max_runs,
        )


@dataclass
class OptimizeOptions:
    pipeline: str
    step: str
    metric: str = "exact"
    optimizer: str = "bootstrap"
    #: JSONL training data; ``dev`` held out, else a seeded split of ``train``.
    train: str | None = None
    dev: str | None = None
    dev_fraction: float = 0.3
    seed: int = 0
    #: Training data from the monitor's executions of the pipeline instead of files.
    from_executions: bool = False
    min_score: float | None = None
    score_name: str = ""
    executions_limit: int = 500
    max_demos: int = 5
    max_labeled_demos: int = 4
    candidates: int = 6
    judge_model: str = ""
    judge_preset: str = ""
    reflection_model: str = ""
    reflection_preset: str = ""
    parity_threshold: float = 0.1
    rollout_weight: float = 0.1
    guard: GuardOptions = field(default_factory=GuardOptions)
    version_id: str = ""
    description: str = ""
    #: Where to save the compiled program's JSON (``dspy.Module.save``).
    save: str | None = None
    #: Write the winner into this pipeline file instead of publishing it.
    write_yaml: str | None = None
    #: Measure and check, publish nothing.
    dry_run: bool = False
    #: Deadline of each pipeline run (seconds).
    timeout: float | None = None


@dataclass
class OptimizeResult:
    spec: StepSpec
    optimizer: str
    train_size: int
    dev_size: int
    dspy_before: float
    dspy_after: float
    pipeline_before: float
    pipeline_after: float
    parity: ParityReport
    template: prompts_pb2.PromptTemplate
    elapsed_s: float
    demos: int
    saved_path: str | None = None
    #: The published version (None when not published).
    version: prompts_pb2.PromptVersion | None = None
    rollout: prompts_pb2.PromptRollout | None = None
    yaml_path: str | None = None
    skipped_executions: list[str] = field(default_factory=list)
    #: Pipeline runs of the held-out set that failed (scored 0), "CODE: details" each.
    pipeline_errors: list[str] = field(default_factory=list)

    @property
    def scores(self) -> dict[str, float]:
        """What the published version carries as its measured scores."""
        return {
            "dspy_dev_before": self.dspy_before,
            "dspy_dev": self.dspy_after,
            "pipeline_dev_before": self.pipeline_before,
            "parity_dev": self.pipeline_after,
            "parity_gap": self.parity.gap,
        }

    def to_json(self) -> dict[str, Any]:
        from google.protobuf import json_format

        return {
            "pipeline": self.spec.pipeline,
            "step": self.spec.step,
            "optimizer": self.optimizer,
            "train_examples": self.train_size,
            "dev_examples": self.dev_size,
            "scores": self.scores,
            "parity": {
                "dspy": self.parity.dspy_score,
                "pipeline": self.parity.pipeline_score,
                "gap": self.parity.gap,
                "threshold": self.parity.threshold,
                "ok": self.parity.ok,
            },
            "demos": self.demos,
            "template": json_format.MessageToDict(self.template),
            "published_version": self.version.id if self.version is not None else None,
            "rollout": json_format.MessageToDict(self.rollout) if self.rollout is not None else None,
            "yaml_path": self.yaml_path,
            "saved_path": self.saved_path,
            "pipeline_errors": self.pipeline_errors,
            "elapsed_s": round(self.elapsed_s, 3),
        }


class ProgressDisplay(BaseCallback):
    """Candidates tried, best score so far and elapsed time, on stderr while DSPy compiles.

    It counts candidate programs DSPy evaluates (``dspy.Evaluate``, as random search, MIPRO and
    GEPA do) and, for optimizers that evaluate none (BootstrapFewShot), each scored attempt; the
    best score is the best candidate's, else the attempts' success rate so far.
    """

    def __init__(self, label: str, out: TextIO | None = None, *, min_interval_s: float = 1.0) -> None:
        self.label = label
        self.out = out if out is not None else sys.stderr
        self.started = time.monotonic()
        self.evaluations = 0
        self.attempts = 0
        self.successes = 0.0
        self.best: float | None = None
        self._lock = threading.Lock()
        self._last_draw = 0.0
        self._min_interval_s = min_interval_s
        self._tty = bool(getattr(self.out, "isatty", lambda: False)())
        self._drawn = False

    def wrap_metric(self, metric: Callable[..., float]) -> Callable[..., float]:
        def counted(*args: Any, **kwargs: Any) -> float:
            score = metric(*args, **kwargs)
            with self._lock:
                self.attempts += 1
                self.successes += float(getattr(score, "score", score))
            self.draw()
            return score

        counted.__name__ = getattr(metric, "__name__", "metric")
        return counted

    def on_evaluate_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        if outputs is None:
            return
        score = getattr(outputs, "score", outputs)
        with self._lock:
            self.evaluations += 1
            try:
                value = float(score) / 100.0  # dspy.Evaluate answers a percentage
            except (TypeError, ValueError):
                return
            self.best = value if self.best is None else max(self.best, value)
        self.draw(force=True)

    def line(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        tried = self.evaluations or self.attempts
        best = self.best if self.best is not None else (
            self.successes / self.attempts if self.attempts else None
        )
        best_text = f"{best:.2f}" if best is not None else "-"
        what = "candidates" if self.evaluations else "attempts"
        return (
            f"{self.label}: {tried} {what} tried, best score so far {best_text},"
            f" {elapsed // 60}:{elapsed % 60:02d} elapsed"
        )

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self._min_interval_s:
            return
        self._last_draw = now
        if self._tty:
            self.out.write("\r\x1b[K" + self.line())
        else:
            self.out.write(self.line() + "\n")
        self.out.flush()
        self._drawn = True

    def finish(self) -> None:
        self.draw(force=True)
        if self._tty:
            self.out.write("\n")
            self.out.flush()


def _say(out: TextIO | None, text: str) -> None:
    if out is not None:
        out.write(text + "\n")
        out.flush()


def _default_lm_factory(gateway: Any) -> LmFactory:
    from elexirion_optimizer.lm import ElexirionLM

    def make(model: str, preset: str) -> dspy.BaseLM:
        return ElexirionLM(model, gateway=gateway, preset=preset)

    return make


def _check_options(options: OptimizeOptions) -> None:
    """Refuses contradictory or out-of-range options before any call, naming the flag."""
    guard = options.guard
    if not guard.metric and (guard.min_runs or guard.significance or guard.score_name or guard.max_runs):
        raise OptionsError("--guard-min-runs/--guard-significance/--guard-score-name/--guard-max-runs need --guard-metric")
    if guard.metric and options.write_yaml:
        raise OptionsError("--guard-metric watches a published rollout; --write-yaml publishes nothing")
    if guard.metric and options.rollout_weight == 0:
        raise OptionsError("--guard-metric needs a --rollout-weight above 0 (a guard watches a rollout)")
    if guard.min_runs < 0 or guard.max_runs < 0:
        raise OptionsError("--guard-min-runs and --guard-max-runs must be >= 0")
    if not 0 <= guard.significance < 1:
        raise OptionsError(f"--guard-significance must be in [0, 1), got {guard.significance}")
    if options.parity_threshold < 0:
        raise OptionsError(f"--parity-threshold must be >= 0, got {options.parity_threshold}")
    if options.max_demos < 0 or options.max_labeled_demos < 0:
        raise OptionsError("--max-demos and --max-labeled-demos must be >= 0")
    if options.candidates < 1:
        raise OptionsError(f"--candidates must be at least 1, got {options.candidates}")
    if options.executions_limit < 1:
        raise OptionsError(f"--executions-limit must be at least 1, got {options.executions_limit}")
    if options.min_score is not None and not options.from_executions:
        raise OptionsError("--min-score applies to --from-executions")
    if options.optimizer == "mipro" and importlib.util.find_spec("optuna") is None:
        # MIPROv2 imports it only once compiling: say so before any LM call.
        raise OptionsError("--optimizer mipro needs optuna: pip install 'elexirion-optimizer[mipro]'")
    if options.from_executions and (options.train or options.dev):
        raise OptionsError("use --train/--dev or --from-executions, not both")


def _in_dspy(measure: Callable[[], Evaluation]) -> Evaluation:
    """A DSPy measurement; an LM failure in it stops everything before anything is published."""
    try:
        return measure()
    except (KeyboardInterrupt, OptimizeError):
        raise
    except Exception as err:
        raise OptimizeError(
            f"scoring in DSPy failed ({type(err).__name__}: {err}); nothing was published and"
            " serving is untouched"
        ) from err


def _data(options: OptimizeOptions, gateway: Any, spec: StepSpec) -> tuple[data_module.Split, list[str]]:
    skipped: list[str] = []
    if options.from_executions:
        filters: dict[str, Any] = {"status": "OK"}
        if options.min_score is not None:
            filters["min_score"] = options.min_score
            filters["score_name"] = options.score_name
        runs = gateway.iter_executions(spec.pipeline, limit=options.executions_limit, **filters)
        examples, skipped = data_module.from_executions(runs, spec)
        if len(examples) < 2:
            above = (
                f" with {options.score_name or 'thumbs'} >= {options.min_score}"
                if options.min_score is not None else ""
            )
            raise data_module.DataError(
                f"--from-executions: {len(examples)} usable completed runs of {spec.pipeline!r}"
                f"{above} (need at least 2)" + (f"; skipped: {skipped[0]}" if skipped else "")
            )
        return data_module.split(examples, options.dev_fraction, options.seed), skipped
    if not options.train:
        raise OptionsError("training data needed: --train FILE.jsonl or --from-executions")
    train = data_module.load_jsonl(options.train, spec)
    if options.dev:
        return data_module.Split(train=train, dev=data_module.load_jsonl(options.dev, spec)), skipped
    return data_module.split(train, options.dev_fraction, options.seed), skipped


def _compile(
    options: OptimizeOptions,
    program: StepProgram,
    trainset: list[dspy.Example],
    metric: Callable[..., float],
    make_lm: LmFactory,
    spec: StepSpec,
) -> tuple[StepProgram, str]:
    """The compiled program and the optimizer's name (``source`` of the version)."""
    from dspy import teleprompt

    if options.optimizer == "bootstrap":
        optimizer: Any = teleprompt.BootstrapFewShot(
            metric=metric,
            max_bootstrapped_demos=options.max_demos,
            max_labeled_demos=options.max_labeled_demos,
        )
        compiled = optimizer.compile(program, trainset=trainset)
    elif options.optimizer == "random-search":
        optimizer = teleprompt.BootstrapFewShotWithRandomSearch(
            metric=metric,
            max_bootstrapped_demos=options.max_demos,
            max_labeled_demos=options.max_labeled_demos,
            num_candidate_programs=options.candidates,
            num_threads=1,
        )
        compiled = optimizer.compile(program, trainset=trainset)
    elif options.optimizer == "mipro":
        optimizer = teleprompt.MIPROv2(
            metric=metric,
            auto="light",
            max_bootstrapped_demos=options.max_demos,
            max_labeled_demos=options.max_labeled_demos,
            num_threads=1,
            seed=options.seed,
        )
        compiled = optimizer.compile(program, trainset=trainset)
    elif options.optimizer == "gepa":
        reflection = make_lm(options.reflection_model or spec.model, options.reflection_preset)
        optimizer = teleprompt.GEPA(
            metric=metric,
            auto="light",
            reflection_lm=reflection,
            num_threads=1,
            seed=options.seed,
        )
        compiled = optimizer.compile(program, trainset=trainset)
    else:
        raise OptimizeError(
            f"--optimizer {options.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}"
        )
    return compiled, type(optimizer).__name__


def optimize(
    gateway: Any,
    options: OptimizeOptions,
    *,
    lm_factory: LmFactory | None = None,
    log: TextIO | None = None,
    progress_out: TextIO | None = None,
) -> OptimizeResult:
    """Runs the whole optimization (see the module's docstring); raises OptimizeError (or its
    subclasses, DataError, PipelineError, MetricError, ParityError, GatewayError) with nothing
    published."""
    started = time.monotonic()
    if options.optimizer not in OPTIMIZERS:
        raise OptionsError(
            f"--optimizer {options.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}"
        )
    if not 0 <= options.rollout_weight < 1:
        raise OptionsError(f"--rollout-weight must be in [0, 1), got {options.rollout_weight}")
    _check_options(options)
    make_lm = lm_factory or _default_lm_factory(gateway)

    spec = step_spec_from_gateway(gateway, options.pipeline, options.step)
    split, skipped = _data(options, gateway, spec)
    # The parity check replays the held-out set through the pipeline: find out now, not after
    # compiling, when an example lacks what a run needs.
    for example in split.dev:
        pipeline_inputs_for(spec, example)
    _say(log, f"{spec.pipeline}.{spec.step}: model {spec.model or '(default)'}"
              f"{' preset ' + spec.preset if spec.preset else ''}; {len(split.train)} training,"
              f" {len(split.dev)} held-out examples")
    lm = make_lm(spec.model, spec.preset)
    judge_lm = (
        make_lm(options.judge_model or spec.model, options.judge_preset)
        if options.metric == "judge" else None
    )
    metric = make_metric(
        options.metric, spec.output, judge_lm=judge_lm,
        task=lambda example: spec.render(spec.prompt, example),
    )
    program = StepProgram(spec, lm)
    form = FOLDED if options.write_yaml else DEMOS

    _say(log, "scoring the starting prompt in DSPy on the held-out set")
    dspy_before = _in_dspy(lambda: evaluate_program(program, split.dev, metric))
    display = ProgressDisplay(f"optimizing {spec.step} with {options.optimizer}", progress_out)
    try:
        # The step's LM as DSPy's default too: optimizers copy predictors without their LM.
        # DSPy prints its own notes on stdout, which belongs to the report (and --json).
        with dspy.context(lm=lm, callbacks=[display]), contextlib.redirect_stdout(progress_out or sys.stderr):
            compiled, source = _compile(options, program, split.train, display.wrap_metric(metric), make_lm, spec)
        compiled.predict.set_lm(lm)
    except (KeyboardInterrupt, OptimizeError):
        raise
    except Exception as err:
        raise OptimizeError(
            f"the optimizer failed ({type(err).__name__}: {err}); nothing was published and"
            " serving is untouched"
        ) from err
    finally:
        display.finish()

    _say(log, "scoring the optimized prompt in DSPy on the held-out set")
    dspy_after = _in_dspy(lambda: evaluate_program(compiled, split.dev, metric))
    saved_path = None
    if options.save:
        Path(options.save).parent.mkdir(parents=True, exist_ok=True)
        compiled.save(options.save)
        saved_path = options.save

    after_template = export_template(spec, compiled.predict, form)
    _say(log, "running the held-out set through the pipeline (starting prompt, then optimized)")
    pipeline_before: Evaluation = evaluate_pipeline(
        gateway, spec, program.predict, split.dev, metric, form=form, timeout=options.timeout
    )
    pipeline_after: Evaluation = evaluate_pipeline(
        gateway, spec, compiled.predict, split.dev, metric, form=form, timeout=options.timeout
    )
    parity = ParityReport(
        dspy_score=dspy_after.score,
        pipeline_score=pipeline_after.score,
        threshold=options.parity_threshold,
        examples=len(split.dev),
    )
    result = OptimizeResult(
        spec=spec,
        optimizer=source,
        train_size=len(split.train),
        dev_size=len(split.dev),
        dspy_before=dspy_before.score,
        dspy_after=dspy_after.score,
        pipeline_before=pipeline_before.score,
        pipeline_after=pipeline_after.score,
        parity=parity,
        template=after_template,
        elapsed_s=time.monotonic() - started,
        demos=len(compiled.predict.demos),
        saved_path=saved_path,
        skipped_executions=skipped,
        pipeline_errors=pipeline_before.errors + pipeline_after.errors,
    )
    if pipeline_after.errors:
        _say(log, f"{len(pipeline_after.errors)} of {len(split.dev)} pipeline runs with the optimized"
                  f" prompt failed (scored 0), e.g. {pipeline_after.errors[0]}")
    check_parity(parity)
    if pipeline_after.score <= pipeline_before.score:
        raise NoGainError(
            f"the optimized prompt scored {pipeline_after.score:.3f} in the pipeline, the starting"
            f" one {pipeline_before.score:.3f}: no gain, so nothing was published"
        )
    if options.dry_run:
        return result
    if options.write_yaml:
        write_step_prompt(options.write_yaml, spec.pipeline, spec.step, after_template, spec.prompt)
        result.yaml_path = options.write_yaml
        return result
    description = options.description or (
        f"{source} with the {options.metric} metric on {len(split.train)} examples:"
        f" {len(compiled.predict.demos)} demos"
    )
    reason = (
        f"optimize: held-out {options.metric} {pipeline_before.score:.2f} ->"
        f" {pipeline_after.score:.2f} in the pipeline (DSPy {dspy_after.score:.2f})"
    )
    # The one call that changes serving: the version and its rollout land together or not at all.
    try:
        response = gateway.publish_prompt_version(
            spec.pipeline,
            spec.step,
            after_template,
            version_id=options.version_id,
            source=f"dspy:{source}",
            description=description,
            scores=result.scores,
            rollout_weight=options.rollout_weight,
            guard=options.guard.proto() if options.rollout_weight > 0 else None,
            reason=reason,
        )
    except KeyboardInterrupt as interrupt:
        raise PublishInterrupted() from interrupt
    result.version = response.version
    result.rollout = response.step.rollout
    result.elapsed_s = time.monotonic() - started
    return result
