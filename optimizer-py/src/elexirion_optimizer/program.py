"""DSPy programs for Elexirion pipelines.

:class:`StepSpec` is one LLM step as the optimizer sees it: its prompt template, system text,
model and preset, the DSPy input fields its placeholders become and its one output field.
:func:`step_predictor` turns it into a ``dspy.Predict`` whose starting instructions are the step's
YAML prompt, on the step's own model alias and preset (so DSPy measures what the pipeline runs).
:class:`ElixirGenesisPipeline` is the design's whole-pipeline module: ``forward(**inputs)`` runs the
pipeline through ``Gateway.ExecutePipeline`` with the module's current candidate prompts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

__all__ = [
    "ElixirGenesisPipeline",
    "PipelineError",
    "StepField",
    "StepSpec",
    "field_name",
    "find_steps",
    "placeholders",
    "render_template",
    "step_predictor",
    "step_spec",
    "step_spec_from_gateway",
]

# The executor's placeholder syntax (services/executor/src/pipeline/templates.ts).
PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")
_NOT_IDENTIFIER = re.compile(r"\W+")


class PipelineError(ValueError):
    """The pipeline or step cannot be optimized as asked; the message says why."""


@dataclass(frozen=True)
class StepField:
    """One DSPy input field and the placeholder text (without braces) it stands for."""

    name: str
    placeholder: str


@dataclass(frozen=True)
class StepSpec:
    """One LLM step of a pipeline, as the optimizer needs it."""

    pipeline: str
    step: str
    #: The step's prompt as one template string (prompt parts joined as the executor joins them).
    prompt: str
    #: The step's system text ("" for none).
    system: str
    #: The model alias (or provider/model) and preset a run resolves for the step.
    model: str
    preset: str
    #: DSPy input fields, one per distinct placeholder, in order of first appearance.
    inputs: tuple[StepField, ...]
    #: The DSPy output field: what a training example's expected answer is called.
    output: str
    #: The pipeline's declared inputs (names), and those it requires: a replay needs them.
    pipeline_inputs: tuple[str, ...] = field(default=())
    required_inputs: tuple[str, ...] = field(default=())

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.inputs]

    def values_by_placeholder(self, example: Mapping[str, Any]) -> dict[str, str]:
        """The placeholder values of ``example`` (keyed by field name), keyed by placeholder."""
        return {f.placeholder: str(example[f.name]) for f in self.inputs}

    def render(self, template: str, example: Mapping[str, Any]) -> str:
        """``template`` with this step's placeholders filled from ``example``'s fields."""
        return render_template(template, self.values_by_placeholder(example))

    @property
    def instructions(self) -> str:
        """The starting instructions: the system text, then the YAML prompt."""
        return "\n\n".join(part for part in (self.system, self.prompt) if part)


def placeholders(template: str) -> list[str]:
    """The placeholders of ``template`` (text inside ``{{ }}``, trimmed), in order, each once."""
    seen: dict[str, None] = {}
    for match in PLACEHOLDER.finditer(template):
        seen.setdefault(match.group(1).strip(), None)
    return list(seen)


def field_name(placeholder: str) -> str:
    """The DSPy field a placeholder becomes: inputs.x -> x, steps.y.output -> y_output, vars.z -> z.

    Anything else keeps its root: steps.y.json.a -> y_json_a, loop.item -> loop_item.
    """
    root, _, rest = placeholder.partition(".")
    if root in ("inputs", "vars") and rest:
        name = rest
    elif root == "steps" and rest:
        name = rest
    else:
        name = placeholder
    return _NOT_IDENTIFIER.sub("_", name).strip("_") or "value"


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Fills ``{{ placeholder }}`` from ``values`` (keyed by the trimmed placeholder text)."""

    def fill(match: re.Match[str]) -> str:
        key = match.group(1).strip()
        if key not in values:
            raise PipelineError(f"no value for {{{{{key}}}}}")
        return values[key]

    return PLACEHOLDER.sub(fill, template)


def _load_yaml(source: str, where: str) -> dict[str, Any]:
    try:
        document = YAML(typ="safe", pure=True).load(source)
    except YAMLError as err:
        raise PipelineError(f"{where}: not valid YAML: {err}") from err
    if not isinstance(document, dict) or not isinstance(document.get("workflow"), dict):
        raise PipelineError(f"{where}: no `workflow:` mapping at the top")
    workflow: dict[str, Any] = document["workflow"]
    return workflow


def find_steps(steps: Sequence[Any]) -> list[dict[str, Any]]:
    """Every step, nested ones (parallel, for_each) included, in document order."""
    found: list[dict[str, Any]] = []
    for step in steps or ():
        if isinstance(step, dict):
            found.append(step)
            found.extend(find_steps(step.get("steps") or ()))
    return found


def _prompt_text(step: Mapping[str, Any], where: str) -> str:
    prompt = step.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, list):
        raise PipelineError(f"{where}: has no prompt (not an LLM step)")
    parts: list[str] = []
    for index, part in enumerate(prompt):
        if not isinstance(part, dict):
            raise PipelineError(f"{where}.prompt[{index}]: expected static, file or previous_response")
        if "static" in part:
            parts.append(str(part["static"]))
        elif "previous_response" in part:
            extract = part.get("extract")
            ref = f"steps.{part['previous_response']}.json.{extract}" if extract else (
                f"steps.{part['previous_response']}.output"
            )
            parts.append("{{" + ref + "}}")
        elif "file" in part:
            raise PipelineError(
                f"{where}.prompt[{index}]: reads the file {part['file']!r}, which the optimizer"
                " cannot see through the gateway; inline it as `static:` to optimize this step"
            )
        else:
            raise PipelineError(f"{where}.prompt[{index}]: expected static, file or previous_response")
    # The executor joins prompt parts with a blank line (engine/llm-call.ts renderPrompt).
    return "\n\n".join(parts)


def _output_name(workflow: Mapping[str, Any], step: str, taken: set[str]) -> str:
    # A workflow output that is exactly this step's output names the field the data calls it by.
    outputs = workflow.get("outputs")
    for name, value in outputs.items() if isinstance(outputs, dict) else ():
        whole = PLACEHOLDER.fullmatch(str(value).strip())
        if whole and whole.group(1).strip() == f"steps.{step}.output":
            candidate = field_name(str(name))
            if candidate not in taken:
                return candidate
    for candidate in (field_name(step), f"{field_name(step)}_output", "output"):
        if candidate not in taken:
            return candidate
    raise PipelineError(f"step {step!r}: no free name for its output field")


def step_spec(
    yaml_source: str, step: str, *, model: str = "", preset: str = "", where: str = "pipeline"
) -> StepSpec:
    """The :class:`StepSpec` of ``step`` in a pipeline's YAML source.

    ``model``/``preset`` are what a run resolves for the step (GetPipeline's step_models); when
    empty, the step's own ``model``/``preset`` fields are used.
    """
    workflow = _load_yaml(yaml_source, where)
    name = str(workflow.get("name") or "")
    steps = find_steps(workflow.get("steps") or [])
    matches = [s for s in steps if s.get("name") == step]
    if not matches:
        llm = [str(s.get("name")) for s in steps if "prompt" in s]
        raise PipelineError(
            f"{where}: no step {step!r} (its LLM steps: {', '.join(llm) or 'none'})"
        )
    found = matches[0]
    step_where = f"{where}: step {step!r}"
    prompt = _prompt_text(found, step_where)
    system = str(found.get("system") or "")
    fields: dict[str, StepField] = {}
    by_placeholder: dict[str, str] = {}
    # The system text's placeholders are inputs too: it is rendered on the same scope.
    for placeholder in placeholders(system) + placeholders(prompt):
        if placeholder in by_placeholder:
            continue
        base = field_name(placeholder)
        candidate = base
        if candidate in fields:
            root = placeholder.partition(".")[0]
            candidate = f"{root}_{base}"
        suffix = 2
        while candidate in fields:
            candidate = f"{base}_{suffix}"
            suffix += 1
        fields[candidate] = StepField(candidate, placeholder)
        by_placeholder[placeholder] = candidate
    if not fields:
        raise PipelineError(
            f"{step_where}: its prompt has no placeholder ({{{{inputs.x}}}}, {{{{steps.y.output}}}},"
            " {{vars.z}}), so every run asks the same thing: nothing to learn from examples"
        )
    inputs = workflow.get("inputs") or {}
    return StepSpec(
        pipeline=name,
        step=step,
        prompt=prompt,
        system=system,
        model=model or str(found.get("model") or ""),
        preset=preset or str(found.get("preset") or ""),
        inputs=tuple(fields.values()),
        output=_output_name(workflow, step, set(fields)),
        pipeline_inputs=tuple(str(k) for k in inputs) if isinstance(inputs, dict) else (),
        required_inputs=tuple(
            str(k) for k, v in inputs.items() if isinstance(v, dict) and v.get("required")
        ) if isinstance(inputs, dict) else (),
    )


def step_spec_from_gateway(gateway: Any, pipeline: str, step: str) -> StepSpec:
    """The step's spec from ``Gateway.GetPipeline``: its YAML source and its resolved model."""
    response = gateway.get_pipeline(pipeline)
    models = {m.step: m for m in response.step_models}
    resolved = models.get(step)
    spec = step_spec(
        response.yaml,
        step,
        model=resolved.model if resolved else "",
        preset=resolved.preset if resolved else "",
        where=f"pipeline {pipeline!r}",
    )
    if resolved is None:
        raise PipelineError(
            f"pipeline {pipeline!r}: step {step!r} is not an LLM step"
            f" (LLM steps: {', '.join(models) or 'none'})"
        )
    return spec


def signature_for(spec: StepSpec, instructions: str | None = None) -> type[dspy.Signature]:
    """A DSPy signature: the step's placeholders in, its output out, its YAML prompt as instructions."""
    fields: dict[str, Any] = {
        f.name: (str, dspy.InputField(desc=f"{{{{{f.placeholder}}}}} in the step's prompt"))
        for f in spec.inputs
    }
    fields[spec.output] = (str, dspy.OutputField(desc=f"the output of step {spec.step}"))
    return dspy.make_signature(
        fields,
        instructions if instructions is not None else spec.instructions,
        signature_name=f"{_NOT_IDENTIFIER.sub('_', spec.pipeline)}_{spec.step}".title().replace("_", ""),
    )


def step_predictor(spec: StepSpec, lm: dspy.BaseLM | None) -> dspy.Predict:
    """A ``dspy.Predict`` for the step, its LM set (the step's alias and preset) when given."""
    predictor = dspy.Predict(signature_for(spec))
    if lm is not None:
        predictor.set_lm(lm)
    return predictor


class StepProgram(dspy.Module):
    """The one-predictor program DSPy's optimizers compile for a step."""

    def __init__(self, spec: StepSpec, lm: dspy.BaseLM | None) -> None:
        super().__init__()
        self.spec = spec
        self.step_lm = _Shared(lm)
        # The LM is the program's (below), not set on the predictor: DSPy's optimizers copy and
        # reset predictors (dropping their LM), and an LM holding a gRPC channel cannot be
        # deep-copied. optimize() sets it on the compiled predictor so the saved JSON names it.
        self.predict = step_predictor(spec, None)

    def forward(self, **inputs: Any) -> dspy.Prediction:
        lm = self.step_lm.value
        if self.predict.lm is None and lm is not None:
            # The step's own model, whatever DSPy's default LM is.
            with dspy.context(lm=lm):
                return self.predict(**inputs)
        return self.predict(**inputs)


class _Shared:
    """Holds an object DSPy's deep copies of a module share rather than copy (an LM's channel)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __deepcopy__(self, memo: dict[int, Any]) -> _Shared:
        return self


class ElixirGenesisPipeline(dspy.Module):
    """A whole pipeline as a DSPy module: ``forward`` runs it through ``Gateway.ExecutePipeline``.

    ``predictors`` maps step names to (spec, predictor): each run sends every predictor's current
    prompt (exported by ``exporter``) as that step's prompt candidate, so what the module scores
    is what the pipeline would serve. ``forward(**inputs)`` takes the pipeline's inputs and answers
    ``dspy.Prediction(output=<pipeline result>, run_id=..., steps=[StepResult...])`` plus, for each
    optimized step, its output under the step's output field.
    """

    def __init__(
        self,
        gateway: Any,
        pipeline: str,
        predictors: Mapping[str, tuple[StepSpec, dspy.Predict]],
        exporter: Callable[[StepSpec, dspy.Predict], Any],
        *,
        timeout: float | None = None,
        session_id: str = "",
    ) -> None:
        super().__init__()
        self.gateway = gateway
        self.pipeline = pipeline
        self.specs = {step: spec for step, (spec, _) in predictors.items()}
        # Kept as attributes so named_predictors() (and DSPy's optimizers) see them.
        self.step_predictors = {step: predictor for step, (_, predictor) in predictors.items()}
        self.exporter = exporter
        self.timeout = timeout
        self.session_id = session_id

    def candidates(self) -> dict[str, Any]:
        """The PromptTemplate each optimized step would serve now."""
        return {
            step: self.exporter(self.specs[step], predictor)
            for step, predictor in self.step_predictors.items()
        }

    def forward(self, **inputs: Any) -> dspy.Prediction:
        response = self.gateway.execute_pipeline(
            self.pipeline,
            {name: str(value) for name, value in inputs.items()},
            self.timeout,
            prompt_candidates=self.candidates(),
            session_id=self.session_id,
        )
        by_step = {result.name: result for result in response.steps}
        outputs: dict[str, Any] = {}
        for step, spec in self.specs.items():
            result = by_step.get(step)
            outputs[spec.output] = result.output if result is not None else ""
        return dspy.Prediction(
            output=response.result, run_id=response.job_id, steps=list(response.steps), **outputs
        )


def pipeline_inputs_for(spec: StepSpec, example: Mapping[str, Any]) -> dict[str, str]:
    """The pipeline inputs a run needs to reproduce ``example`` at the step.

    ``{{inputs.x}}`` placeholders take the example's field; the pipeline's other inputs come from
    the example's fields of the same name (``--from-executions`` examples carry the run's inputs).
    A step reading earlier steps or variables is reached by running the pipeline on its inputs,
    so those must all be there.
    """
    values: dict[str, str] = {}
    computed: list[str] = []
    for f in spec.inputs:
        root, _, rest = f.placeholder.partition(".")
        if root == "inputs" and re.fullmatch(r"[A-Za-z_][\w-]*", rest):
            values[rest] = str(example[f.name])
        else:
            computed.append(f.placeholder)
    for name in spec.pipeline_inputs:
        if name not in values and name in example:
            values[name] = str(example[name])
    missing = [name for name in spec.required_inputs if name not in values]
    if computed and not values:
        missing = missing or list(spec.pipeline_inputs)
    if missing:
        why = (
            f"step {spec.step!r} reads {{{{{computed[0]}}}}}, which a run computes from the"
            " pipeline's inputs" if computed else f"pipeline {spec.pipeline!r} requires it"
        )
        raise PipelineError(
            f"an example has no pipeline input {', '.join(repr(m) for m in missing)} ({why}):"
            " the held-out set is replayed through the pipeline, so give examples the pipeline's"
            " inputs as fields (--from-executions examples carry them)"
        )
    return values
