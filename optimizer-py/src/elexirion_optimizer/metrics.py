"""Metrics for ``optimize``: ``exact``, ``contains``, ``judge`` or ``module:function``.

Every metric is called as DSPy calls metrics, ``metric(example, prediction, trace=None,
pred_name=None, pred_trace=None)`` (the last two are GEPA's), and answers a score in [0, 1]:
1.0 for a success. The expected answer is the example's output field; the prediction's field of
the same name is compared with it (a DSPy prediction and a pipeline run's prediction alike).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

import dspy

__all__ = ["Metric", "MetricError", "JUDGE_SUCCESS", "make_metric", "normalize"]

Metric = Callable[..., float]
#: The judge's 0-10 rating that counts as a success (the design's threshold).
JUDGE_SUCCESS = 8
_SPACES = re.compile(r"\s+")


class MetricError(ValueError):
    """The --metric value cannot be used; the message says why."""


def normalize(text: Any) -> str:
    """Case, surrounding whitespace and quotes, inner runs of whitespace and a final period ignored."""
    value = _SPACES.sub(" ", str(text)).strip().strip("\"'`").strip()
    return value.rstrip(".").strip().casefold()


def _answer(prediction: Any, output: str) -> str:
    value = getattr(prediction, output, None)
    if value is None and isinstance(prediction, dict):
        value = prediction.get(output)
    return "" if value is None else str(value)


def exact(output: str) -> Metric:
    def metric(example: Any, prediction: Any, trace: Any = None, pred_name: Any = None,
               pred_trace: Any = None) -> float:
        return float(normalize(_answer(prediction, output)) == normalize(example[output]))

    metric.__name__ = "exact"
    return metric


def contains(output: str) -> Metric:
    def metric(example: Any, prediction: Any, trace: Any = None, pred_name: Any = None,
               pred_trace: Any = None) -> float:
        expected = normalize(example[output])
        return float(bool(expected) and expected in normalize(_answer(prediction, output)))

    metric.__name__ = "contains"
    return metric


class JudgeRating(dspy.Signature):
    """Rate how well the answer matches the expected answer for the task, from 0 (wrong or
    unrelated) to 10 (as good as the expected answer). Judge meaning, not wording."""

    task: str = dspy.InputField(desc="what the step was asked")
    expected: str = dspy.InputField(desc="a correct answer")
    answer: str = dspy.InputField(desc="the answer to rate")
    rating: int = dspy.OutputField(desc="0-10")


def judge(output: str, lm: dspy.BaseLM, task: Callable[[Any], str]) -> Metric:
    """An LLM rater through ``lm`` (an ElexirionLM): 0-10, a success at 8 or more.

    ``task(example)`` is what the step was asked for that example (its prompt, rendered).
    """
    rater = dspy.Predict(JudgeRating)
    rater.set_lm(lm)

    def metric(example: Any, prediction: Any, trace: Any = None, pred_name: Any = None,
               pred_trace: Any = None) -> float:
        answer = _answer(prediction, output)
        if not answer.strip():
            return 0.0
        rating = rater(task=task(example), expected=str(example[output]), answer=answer).rating
        return float(int(rating) >= JUDGE_SUCCESS)

    metric.__name__ = "judge"
    return metric


def load_callable(reference: str) -> Metric:
    """``package.module:function``, imported; it must take (example, prediction[, trace])."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise MetricError(
            f"--metric {reference!r}: expected exact, contains, judge or module:function"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise MetricError(f"--metric {reference!r}: cannot import {module_name!r}: {err}") from err
    function = getattr(module, attribute, None)
    if not callable(function):
        raise MetricError(f"--metric {reference!r}: {module_name} has no function {attribute!r}")
    parameters = inspect.signature(function).parameters.values()
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_varargs = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    if len(positional) < 2 and not takes_varargs:
        raise MetricError(
            f"--metric {reference!r}: {attribute} must take (example, prediction[, trace])"
        )
    accepts = len(positional) if not takes_varargs else 5

    def metric(example: Any, prediction: Any, trace: Any = None, pred_name: Any = None,
               pred_trace: Any = None) -> float:
        args = (example, prediction, trace, pred_name, pred_trace)[: max(2, min(accepts, 5))]
        value = function(*args)
        score = getattr(value, "score", value)  # GEPA-style dspy.Prediction(score=, feedback=)
        return float(score)

    metric.__name__ = attribute
    return metric


def make_metric(name: str, output: str, *, judge_lm: dspy.BaseLM | None = None,
                task: Callable[[Any], str] | None = None) -> Metric:
    """The metric named by ``--metric`` for a step whose output field is ``output``; ``task``
    gives the judge each example's question (default: none beyond the expected answer)."""
    if name == "exact":
        return exact(output)
    if name == "contains":
        return contains(output)
    if name == "judge":
        if judge_lm is None:
            raise MetricError("--metric judge needs a judge LM")
        return judge(output, judge_lm, task or (lambda example: ""))
    return load_callable(name)
