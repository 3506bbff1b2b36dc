"""A compiled step predictor as a prompt version, and the parity check before it is published.

Export: the predictor's instructions and demos become a ``PromptTemplate``. The step's YAML prompt
stays the template (its placeholders for the step's inputs kept); instructions an optimizer
rewrote become the system text; each demo becomes a ``PromptDemo`` whose input is the template
rendered on the demo's inputs and whose output is the demo's answer, which the executor sends as
user/assistant pairs before the prompt. For ``--write-yaml`` (a step's YAML has no demos) the demos
are written into the system text instead (:data:`FOLDED`).

Parity: DSPy formats its calls its own way (ChatAdapter), the pipeline sends the exported
template; both are scored on the held-out set, and a gap beyond the threshold refuses the publish.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dspy
import grpc

from elexirion_optimizer.client import GatewayError
from elexirion_optimizer.generated.elexirion.v1 import prompts_pb2
from elexirion_optimizer.program import (
    PLACEHOLDER,
    ElixirGenesisPipeline,
    StepSpec,
    pipeline_inputs_for,
)

__all__ = [
    "DEMOS",
    "FOLDED",
    "Evaluation",
    "ParityError",
    "ParityReport",
    "evaluate_pipeline",
    "evaluate_program",
    "export_template",
    "check_parity",
]

#: Demos as PromptDemo pairs (a registry version).
DEMOS = "demos"
#: Demos written into the system text (a step's YAML, which has no demos).
FOLDED = "folded"
ExportForm = Literal["demos", "folded"]

Progress = Callable[[int, int, float], None]
# Failures that say nothing about the prompt: the check cannot run, so it stops.
_FATAL = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class ParityError(Exception):
    """The exported prompt scores differently in the pipeline than in DSPy: nothing published."""

    def __init__(self, report: ParityReport) -> None:
        super().__init__(report.refusal())
        self.report = report


def _plain(text: str, known: set[str]) -> str:
    # The executor renders the system text as a template: braces an optimizer wrote around
    # something that is not one of the step's placeholders would fail every run.
    def keep(match: re.Match[str]) -> str:
        inner = match.group(1).strip()
        return match.group(0) if inner in known else inner

    return PLACEHOLDER.sub(keep, text)


def _demo_values(spec: StepSpec, demo: Any) -> dict[str, Any] | None:
    values = demo.toDict() if hasattr(demo, "toDict") else dict(demo)
    if all(name in values for name in [*spec.input_names, spec.output]):
        return values
    return None  # a partial demo (DSPy allows them) cannot be rendered as an exchange


def export_template(
    spec: StepSpec, predictor: dspy.Predict, form: ExportForm = DEMOS
) -> prompts_pb2.PromptTemplate:
    """The prompt version ``predictor`` stands for (see the module's docstring)."""
    known = {f.placeholder for f in spec.inputs}
    instructions = (predictor.signature.instructions or "").strip()
    system = spec.system
    if instructions and instructions != spec.instructions.strip():
        system = _plain(instructions, known)
    demos: list[prompts_pb2.PromptDemo] = []
    for demo in predictor.demos:
        values = _demo_values(spec, demo)
        if values is None:
            continue
        demos.append(
            prompts_pb2.PromptDemo(
                input=spec.render(spec.prompt, values), output=str(values[spec.output])
            )
        )
    if form == FOLDED and demos:
        examples = "\n\n".join(
            f"Example {index}:\n{_plain(d.input, set())}\nAnswer: {_plain(d.output, set())}"
            for index, d in enumerate(demos, start=1)
        )
        system = "\n\n".join(part for part in (system, f"Examples of the task:\n\n{examples}") if part)
        demos = []
    return prompts_pb2.PromptTemplate(prompt=spec.prompt, system=system, demos=demos)


@dataclass
class Evaluation:
    """Scores on a data set: the mean, and each example's score in order."""

    scores: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


def evaluate_program(
    program: Any,
    devset: Sequence[dspy.Example],
    metric: Callable[..., float],
    progress: Progress | None = None,
) -> Evaluation:
    """DSPy's in-process score: the program on each example, sequentially.

    An LM failure propagates (unlike dspy.Evaluate, which would score it 0): a score measured
    while the gateway failed is not a score.
    """
    evaluation = Evaluation()
    for index, example in enumerate(devset, start=1):
        prediction = program(**example.inputs())
        evaluation.scores.append(float(metric(example, prediction)))
        if progress:
            progress(index, len(devset), evaluation.score)
    return evaluation


def evaluate_pipeline(
    gateway: Any,
    spec: StepSpec,
    predictor: dspy.Predict,
    devset: Sequence[dspy.Example],
    metric: Callable[..., float],
    *,
    form: ExportForm = DEMOS,
    timeout: float | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """The predictor's exported prompt in the real pipeline: each example through
    ``Gateway.ExecutePipeline`` (an :class:`ElixirGenesisPipeline` whose candidate for the step is
    ``export_template(spec, predictor, form)``), scored on the step's output."""
    module = ElixirGenesisPipeline(
        gateway,
        spec.pipeline,
        {spec.step: (spec, predictor)},
        exporter=lambda step_spec, step_predictor: export_template(step_spec, step_predictor, form),
        timeout=timeout,
    )
    evaluation = Evaluation()
    for index, example in enumerate(devset, start=1):
        try:
            prediction = module(**pipeline_inputs_for(spec, example))
        except GatewayError as err:
            if err.code in _FATAL or getattr(err, "unreachable", False):
                raise
            # The run itself failed (a template the executor refuses, a provider error): the
            # exported prompt scores nothing on this example, as it would serve nothing.
            evaluation.scores.append(0.0)
            evaluation.errors.append(f"{err.code.name}: {err.details}")
            continue
        evaluation.scores.append(float(metric(example, prediction)))
        evaluation.run_ids.append(prediction.run_id)
        if progress:
            progress(index, len(devset), evaluation.score)
    return evaluation


@dataclass(frozen=True)
class ParityReport:
    dspy_score: float
    pipeline_score: float
    threshold: float
    examples: int

    @property
    def gap(self) -> float:
        return abs(self.dspy_score - self.pipeline_score)

    @property
    def ok(self) -> bool:
        # A tiny tolerance: scores are means of floats.
        return self.gap <= self.threshold + 1e-9

    def refusal(self) -> str:
        return (
            f"parity check failed: the exported prompt scored {self.pipeline_score:.3f} in the"
            f" pipeline against {self.dspy_score:.3f} in DSPy on {self.examples} held-out"
            f" examples (gap {self.gap:.3f} > --parity-threshold {self.threshold:.3f}); the prompt"
            " DSPy measured is not the one the pipeline would serve, so nothing was published"
        )


def check_parity(report: ParityReport) -> None:
    """Raises :class:`ParityError` when the gap is beyond the threshold."""
    if not report.ok:
        raise ParityError(report)
