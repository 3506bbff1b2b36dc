"""``--write-yaml``: an exported prompt written into the step of a pipeline file.

ruamel.yaml's round-trip mode keeps the file's comments, key order, quoting and layout; only the
step's ``system`` (and ``prompt``, when it changed) are replaced. The write goes to a temporary
file renamed over the original, so an interrupted write leaves the old file whole.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import LiteralScalarString

from elexirion_optimizer.generated.elexirion.v1 import prompts_pb2
from elexirion_optimizer.program import PipelineError, find_steps

__all__ = ["write_step_prompt"]


def _text(value: str) -> Any:
    # Multi-line text as a literal block (readable, no escapes); one line stays a plain scalar.
    return LiteralScalarString(value) if "\n" in value else value


def _set_system(target: Any, system: str) -> None:
    if not system:
        return
    if "system" in target:
        target["system"] = _text(system)
    else:
        # Before the prompt, where a reader expects it.
        keys = list(target.keys())
        position = keys.index("prompt") if "prompt" in keys else len(keys)
        target.insert(position, "system", _text(system))


def _splice(source: str, target: Any, template: prompts_pb2.PromptTemplate) -> str | None:
    """The file with only the step's ``system`` lines replaced (or inserted before ``prompt``),
    every other byte as it was; None when the lines cannot be located (the round trip then)."""
    if not template.system:
        return source
    keys = list(target.keys())
    lines = source.splitlines(keepends=True)
    if "system" in keys:
        index = keys.index("system")
        if index + 1 >= len(keys):
            return None
        start, column = target.lc.key("system")
        end = target.lc.key(keys[index + 1])[0]
        # Comment and blank lines just above the next key stay with it.
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            end -= 1
    elif "prompt" in keys:
        start, column = target.lc.key("prompt")
        end = start
        if lines[start][:column].strip():  # "- prompt:" as the item's first key
            return None
    else:
        return None
    snippet = io.StringIO()
    _round_trip().dump({"system": _text(template.system)}, snippet)
    block = "".join(" " * column + line if line.strip() else line
                    for line in snippet.getvalue().splitlines(keepends=True))
    return "".join(lines[:start]) + block + "".join(lines[end:])


def _round_trip() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long prompt lines
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def write_step_prompt(
    path: str | Path, pipeline: str, step: str, template: prompts_pb2.PromptTemplate,
    original_prompt: str,
) -> str:
    """Writes ``template`` into ``step`` of the pipeline file at ``path``; answers the new text.

    ``template`` must have no demos (export it folded). ``original_prompt`` is the step's prompt as
    the optimizer read it: a prompt that did not change is left as written (parts included).
    """
    if template.demos:
        raise ValueError("a step's YAML has no demos: export the template folded")
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PipelineError(f"--write-yaml {path}: cannot read: {err.strerror or err}") from err
    yaml = _round_trip()
    try:
        document = yaml.load(source)
    except YAMLError as err:
        raise PipelineError(f"--write-yaml {path}: not valid YAML: {err}") from err
    workflow = document.get("workflow") if hasattr(document, "get") else None
    if not hasattr(workflow, "get"):
        raise PipelineError(f"--write-yaml {path}: no `workflow:` mapping")
    if workflow.get("name") != pipeline:
        raise PipelineError(
            f"--write-yaml {path}: this file is pipeline {workflow.get('name')!r}, not {pipeline!r}"
        )
    matches = [s for s in find_steps(workflow.get("steps") or []) if s.get("name") == step]
    if not matches:
        raise PipelineError(f"--write-yaml {path}: no step {step!r}")
    target = matches[0]
    text = _splice(source, target, template) if template.prompt == original_prompt else None
    if text is None:
        # The general case: ruamel's round trip (comments and order kept; flow mappings may
        # lose inner spaces).
        if template.prompt != original_prompt:
            target["prompt"] = _text(template.prompt)
        _set_system(target, template.system)
        out = io.StringIO()
        yaml.dump(document, out)
        text = out.getvalue()
    # What was written must read back as what was exported.
    check = YAML(typ="safe", pure=True).load(text)
    written = [s for s in find_steps(check["workflow"].get("steps") or []) if s.get("name") == step][0]
    if template.system and written.get("system") != template.system:
        raise PipelineError(f"--write-yaml {path}: the edited file does not read back; left unchanged")
    directory = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return text
