"""Training data for ``optimize``: JSONL files or the monitor's executions (``ListExecutions``).

Each example is a ``dspy.Example`` with the step's input fields (marked as inputs) and its output
field, the expected answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy

from elexirion_optimizer.program import StepSpec

__all__ = ["DataError", "Split", "from_executions", "load_jsonl", "split"]


class DataError(ValueError):
    """Training data that cannot be used; the message names the file and line (or the run)."""


@dataclass(frozen=True)
class Split:
    train: list[dspy.Example]
    dev: list[dspy.Example]


def _example(spec: StepSpec, values: dict[str, Any]) -> dspy.Example:
    return dspy.Example(**values).with_inputs(*spec.input_names)


def load_jsonl(path: str | Path, spec: StepSpec) -> list[dspy.Example]:
    """One example per non-blank line: a JSON object with the step's fields (strings).

    Errors name the line: ``file:line: what``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from err
    wanted = [*spec.input_names, spec.output]
    examples: list[dspy.Example] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not JSON: {err.msg} at column {err.colno}") from err
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object with {', '.join(wanted)}")
        missing = [name for name in wanted if name not in record]
        if missing:
            raise DataError(
                f"{where}: missing {', '.join(repr(m) for m in missing)} (step {spec.step!r}"
                f" needs {', '.join(wanted)}; has {', '.join(record) or 'nothing'})"
            )
        values: dict[str, Any] = {}
        for name, value in record.items():
            if name in wanted and not isinstance(value, (str, int, float, bool)):
                raise DataError(f"{where}: {name!r} must be a string, got {type(value).__name__}")
            values[name] = str(value) if name in wanted else value
        if not values[spec.output].strip():
            raise DataError(f"{where}: {spec.output!r} is empty")
        examples.append(_example(spec, values))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def split(examples: Sequence[dspy.Example], dev_fraction: float, seed: int) -> Split:
    """A seeded shuffle, then ``dev_fraction`` of it held out (at least one example each side)."""
    if len(examples) < 2:
        raise DataError(f"need at least 2 examples to hold some out, got {len(examples)}")
    if not 0 < dev_fraction < 1:
        raise DataError(f"--dev-fraction must be between 0 and 1, got {dev_fraction}")
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    dev_size = min(len(shuffled) - 1, max(1, round(len(shuffled) * dev_fraction)))
    return Split(train=shuffled[dev_size:], dev=shuffled[:dev_size])


def from_executions(
    executions: Iterable[Any], spec: StepSpec
) -> tuple[list[dspy.Example], list[str]]:
    """Examples from completed runs (monitor ``Execution`` messages) of the step's pipeline.

    The step's inputs come from the run's inputs and earlier steps' outputs, the expected answer
    from the step's own output. Runs that cannot give an example are skipped; the second list
    says why for each.
    """
    examples: list[dspy.Example] = []
    skipped: list[str] = []
    for execution in executions:
        if execution.status != "OK":
            skipped.append(f"run {execution.run_id}: status {execution.status}")
            continue
        steps = {result.name: result for result in execution.steps}
        target = steps.get(spec.step)
        if target is None or target.status != "completed" or not target.output.strip():
            skipped.append(f"run {execution.run_id}: step {spec.step!r} has no completed output")
            continue
        values: dict[str, Any] = {spec.output: target.output}
        reason = ""
        for f in spec.inputs:
            root, _, rest = f.placeholder.partition(".")
            if root == "inputs" and rest in execution.inputs:
                values[f.name] = execution.inputs[rest]
            elif root == "steps" and rest.endswith(".output") and rest[: -len(".output")] in steps:
                values[f.name] = steps[rest[: -len(".output")]].output
            else:
                reason = f"{{{{{f.placeholder}}}}} is not recorded in the run"
                break
        if reason:
            skipped.append(f"run {execution.run_id}: {reason}")
            continue
        # The run's other inputs come along so a replay through the pipeline has them.
        for name, value in execution.inputs.items():
            values.setdefault(name, value)
        examples.append(_example(spec, values))
    return examples, skipped
