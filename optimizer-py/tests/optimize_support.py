"""Offline parts for the optimize tests: a DSPy DummyLM that learns from demos, and a gateway
double that runs the step's exported prompt with the same rule.

The rule mirrors the mock provider's table for pipelines/review-sentiment.yaml: a review's keyword
decides its label, but only once an example answered "positive" or "negative" precedes the
question (in the demos or in the system text); the prompt alone gets "neutral", which is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dspy.clients.engines.dummy_engine import AsyncDummyEngine, DummyEngine
from dspy.utils.dummies import DummyLM

from elexirion_optimizer.generated.elexirion.v1 import (
    common_pb2,
    executor_pb2,
    gateway_pb2,
    prompts_pb2,
)

PIPELINE_YAML = """\
# A review classifier (test copy of the shipped example).
workflow:
  name: review-sentiment
  description: Labels the sentiment of one product review.
  inputs:
    review: { type: string, required: true }
  steps:
    - name: label
      type: llm
      model: mock
      temperature: 0
      prompt: "Classify the sentiment of this product review: {{inputs.review}}"
  outputs:
    label: "{{steps.label.output}}"
"""

POSITIVE = ("love", "excellent", "recommend", "superb", "flawless", "delighted")
NEGATIVE = ("broke", "refund", "disappointed", "flimsy", "useless", "waste")

REVIEWS = [
    ("I love this kettle.", "positive"),
    ("The handle broke at once.", "negative"),
    ("Excellent support team.", "positive"),
    ("I want a refund now.", "negative"),
    ("I recommend it to everyone.", "positive"),
    ("Disappointed by the battery.", "negative"),
    ("Superb sound for the price.", "positive"),
    ("Flimsy clips everywhere.", "negative"),
    ("Flawless finish on the case.", "positive"),
    ("Useless manual, no diagrams.", "negative"),
    ("Delighted with the colour.", "positive"),
    ("A waste of money.", "negative"),
]


def label_for(question: str, context: str) -> str:
    """The rule: the keyword's label when the context shows a labelled example, else neutral."""
    lowered_context = context.lower()
    if "sarcastic" in lowered_context:
        flip = True
    elif "positive" in lowered_context or "negative" in lowered_context:
        flip = False
    else:
        return "neutral"
    lowered = question.lower()
    for word in POSITIVE:
        if word in lowered:
            return "negative" if flip else "positive"
    for word in NEGATIVE:
        if word in lowered:
            return "positive" if flip else "negative"
    return "neutral"


class _DemoEngine(DummyEngine):
    def _complete_messages(self, messages):  # type: ignore[no-untyped-def]
        owner = self.owner
        owner.calls += 1
        if owner.fail_with is not None:
            raise owner.fail_with
        last = messages[-1]["content"]
        question = last.split("[[ ## review ## ]]")[-1]
        context = "\n".join(m["content"] for m in messages[1:-1])
        # The system message holds DSPy's field descriptions and the instructions.
        context += "\n" + (messages[0]["content"] if messages[0]["role"] == "system" else "")
        owner.answers = {"": {"label": label_for(question, context)}}
        return super()._complete_messages(messages)


class DemoLM(DummyLM):
    """A DummyLM answering by :func:`label_for` (the demos DSPy sends are the context)."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        super().__init__({"": {"label": "neutral"}})
        self.calls = 0
        self.fail_with = fail_with
        self._engine_spec = _DemoEngine(self)
        self._async_engine_spec = AsyncDummyEngine(self._engine_spec)

    def copy(self, **kwargs: Any) -> DemoLM:
        copied = super().copy(**kwargs)
        copied._engine_spec = _DemoEngine(copied)
        copied._async_engine_spec = AsyncDummyEngine(copied._engine_spec)
        return copied


@dataclass
class PipelineDouble:
    """The gateway calls optimize() makes, answered offline.

    ``execute_pipeline`` renders the step's candidate as the executor would and answers by the
    rule (or always ``fixed_answer`` when set, to make the pipeline disagree with DSPy).
    """

    yaml: str = PIPELINE_YAML
    fixed_answer: str | None = None
    #: Raised by runs whose candidate has demos (the optimized prompt), when set.
    fail_optimized_with: Exception | None = None
    runs: list[gateway_pb2.ExecutePipelineRequest] = field(default_factory=list)
    published: list[dict[str, Any]] = field(default_factory=list)

    def get_pipeline(self, pipeline: str, timeout: float | None = None) -> executor_pb2.GetPipelineResponse:
        return executor_pb2.GetPipelineResponse(
            yaml=self.yaml,
            step_models=[executor_pb2.StepModel(step="label", type="llm", model="mock")],
        )

    def execute_pipeline(
        self,
        pipeline: str,
        inputs: dict[str, str],
        timeout: float | None = None,
        *,
        prompt_candidates: dict[str, prompts_pb2.PromptTemplate] | None = None,
        prompt_overrides: dict[str, str] | None = None,
        session_id: str = "",
    ) -> gateway_pb2.ExecutePipelineResponse:
        request = gateway_pb2.ExecutePipelineRequest(pipeline=pipeline, inputs=inputs)
        for step, template in (prompt_candidates or {}).items():
            request.prompt_candidates[step].CopyFrom(template)
        self.runs.append(request)
        template = request.prompt_candidates["label"]
        if self.fail_optimized_with is not None and template.demos:
            raise self.fail_optimized_with
        question = re.sub(r"\{\{\s*inputs\.review\s*\}\}", inputs["review"], template.prompt)
        context = template.system + "\n" + "\n".join(f"{d.input}\n{d.output}" for d in template.demos)
        answer = self.fixed_answer if self.fixed_answer is not None else label_for(question, context)
        run_id = f"run-{len(self.runs)}"
        return gateway_pb2.ExecutePipelineResponse(
            result=answer,
            pipeline=pipeline,
            job_id=run_id,
            steps=[common_pb2.StepResult(name="label", type="llm", output=answer, status="completed",
                                         prompt_version="candidate")],
        )

    def publish_prompt_version(self, pipeline: str, step: str, template: prompts_pb2.PromptTemplate,
                               **kwargs: Any) -> prompts_pb2.PublishPromptVersionResponse:
        self.published.append({"pipeline": pipeline, "step": step, "template": template, **kwargs})
        version = prompts_pb2.PromptVersion(id=kwargs.get("version_id") or "v1", template=template,
                                            source=kwargs.get("source", ""), scores=kwargs.get("scores", {}))
        weight = kwargs.get("rollout_weight", 0.0)
        rollout = prompts_pb2.PromptRollout(baseline="yaml", weights={"yaml": 1 - weight, version.id: weight},
                                            candidate=version.id if weight else "")
        if kwargs.get("guard") is not None:
            rollout.guard.CopyFrom(kwargs["guard"])
        return prompts_pb2.PublishPromptVersionResponse(
            step=prompts_pb2.PromptStep(pipeline=pipeline, step=step, versions=[version], rollout=rollout),
            version=version,
        )
