"""Offline tests of ``optimize``: the real DSPy with a DummyLM, a gateway double for pipeline runs."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import dspy
import pytest
from optimize_support import PIPELINE_YAML, REVIEWS, DemoLM, PipelineDouble

from elexirion_optimizer import optimize_cli
from elexirion_optimizer.data import DataError, from_executions, load_jsonl, split
from elexirion_optimizer.export import (
    DEMOS,
    FOLDED,
    ParityError,
    ParityReport,
    check_parity,
    export_template,
)
from elexirion_optimizer.generated.elexirion.v1 import common_pb2, monitor_pb2
from elexirion_optimizer.metrics import MetricError, make_metric
from elexirion_optimizer.optimize import GuardOptions, NoGainError, OptimizeOptions, optimize
from elexirion_optimizer.program import (
    PipelineError,
    StepProgram,
    render_template,
    step_predictor,
    step_spec,
)
from elexirion_optimizer.yaml_write import write_step_prompt

TRIAGE_LIKE = """\
workflow:
  name: triage
  inputs:
    report: { type: string, required: true }
  steps:
    - name: classify
      type: gemini_structured
      prompt: "Classify: {{inputs.report}}"
    - name: remember
      type: set_variable
      variable: kind
      value: "{{steps.classify.json.kind}}"
    - name: drafts
      type: parallel
      steps:
        - name: reply
          type: claude
          system: "You answer {{vars.kind}} reports."
          prompt:
            - static: "Reply kindly to: {{inputs.report}}"
            - previous_response: classify
  outputs:
    answer: "{{steps.reply.output}}"
"""


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in rows))
    return path


@pytest.fixture
def spec():
    return step_spec(PIPELINE_YAML, "label", where="review-sentiment")


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", [{"review": r, "label": l} for r, l in REVIEWS])


# --- program building ---------------------------------------------------------------------------


def test_step_spec_reads_the_step_from_the_pipeline_yaml(spec) -> None:
    assert spec.pipeline == "review-sentiment"
    assert spec.model == "mock" and spec.preset == ""
    assert [(f.name, f.placeholder) for f in spec.inputs] == [("review", "inputs.review")]
    assert spec.output == "label"  # the workflow output that is exactly the step's output
    assert spec.instructions == "Classify the sentiment of this product review: {{inputs.review}}"
    assert spec.pipeline_inputs == ("review",)


def test_nested_step_with_parts_system_vars_and_steps() -> None:
    reply = step_spec(TRIAGE_LIKE, "reply", model="claude_smart", preset="chat")
    assert (reply.model, reply.preset) == ("claude_smart", "chat")
    # System placeholders first, then the prompt's, each once; parts joined as the executor does.
    assert [(f.name, f.placeholder) for f in reply.inputs] == [
        ("kind", "vars.kind"),
        ("report", "inputs.report"),
        ("classify_output", "steps.classify.output"),
    ]
    assert reply.prompt == "Reply kindly to: {{inputs.report}}\n\n{{steps.classify.output}}"
    assert reply.output == "answer"
    assert reply.instructions.startswith("You answer {{vars.kind}} reports.\n\n")


def test_step_spec_errors_name_the_problem() -> None:
    with pytest.raises(PipelineError, match=r"no step 'nope' \(its LLM steps: classify, reply\)"):
        step_spec(TRIAGE_LIKE, "nope")
    with pytest.raises(PipelineError, match="not an LLM step"):
        step_spec(TRIAGE_LIKE, "remember")
    with_file = PIPELINE_YAML.replace(
        'prompt: "Classify the sentiment of this product review: {{inputs.review}}"',
        "prompt:\n        - file: prompts/x.md",
    )
    with pytest.raises(PipelineError, match=r"prompt\[0\]: reads the file 'prompts/x.md'"):
        step_spec(with_file, "label")
    with pytest.raises(PipelineError, match="no placeholder"):
        step_spec(PIPELINE_YAML.replace(": {{inputs.review}}", ""), "label")
    with pytest.raises(PipelineError, match="not valid YAML"):
        step_spec("workflow: [", "label")


def test_predictor_signature_and_lm(spec) -> None:
    lm = DemoLM()
    predictor = step_predictor(spec, lm)
    assert list(predictor.signature.input_fields) == ["review"]
    assert list(predictor.signature.output_fields) == ["label"]
    assert predictor.signature.instructions == spec.instructions
    assert predictor.lm is lm
    assert predictor(review="I love it").label == "neutral"  # no demos: the rule answers wrong


def test_elixir_genesis_pipeline_runs_the_pipeline_with_its_candidates(spec) -> None:
    from elexirion_optimizer.program import ElixirGenesisPipeline

    gateway = PipelineDouble()
    predictor = step_predictor(spec, None)
    module = ElixirGenesisPipeline(gateway, "review-sentiment", {"label": (spec, predictor)},
                                   exporter=lambda s, p: export_template(s, p))
    assert [name for name, _ in module.named_predictors()] == ["step_predictors['label']"]
    first = module(review="I love it")
    assert (first.output, first.label, first.run_id) == ("neutral", "neutral", "run-1")
    assert first.steps[0].prompt_version == "candidate"
    # The module sends its predictors' current prompts: demos now, so the rule answers right.
    predictor.demos = [dspy.Example(review="Awful", label="negative")]
    second = module(review="I love it")
    assert second.output == "positive"
    sent = gateway.runs[-1].prompt_candidates["label"]
    assert [(d.input, d.output) for d in sent.demos] == [
        ("Classify the sentiment of this product review: Awful", "negative")
    ]


def test_render_template_fills_placeholders() -> None:
    assert render_template("a {{ inputs.x }} b {{vars.y}}", {"inputs.x": "1", "vars.y": "2"}) == "a 1 b 2"
    with pytest.raises(PipelineError, match=r"no value for \{\{inputs.z\}\}"):
        render_template("{{inputs.z}}", {})


# --- export ---------------------------------------------------------------------------------------


def test_export_renders_demos_and_keeps_placeholders(spec) -> None:
    predictor = step_predictor(spec, None)
    assert export_template(spec, predictor).prompt == spec.prompt
    assert not export_template(spec, predictor).system and not export_template(spec, predictor).demos
    predictor.demos = [
        dspy.Example(review="I love it", label="positive", augmented=True),
        dspy.Example(review="only half a demo"),  # DSPy allows partial demos; they are left out
    ]
    predictor.signature = predictor.signature.with_instructions("Answer {{inputs.review}} with {{one}} word.")
    template = export_template(spec, predictor, DEMOS)
    assert template.prompt == "Classify the sentiment of this product review: {{inputs.review}}"
    assert [(d.input, d.output) for d in template.demos] == [
        ("Classify the sentiment of this product review: I love it", "positive")
    ]
    # Rewritten instructions become the system text; braces around unknown names are dropped.
    assert template.system == "Answer {{inputs.review}} with one word."

    folded = export_template(spec, predictor, FOLDED)
    assert not folded.demos
    assert folded.system.startswith("Answer {{inputs.review}} with one word.\n\nExamples of the task:")
    assert "Classify the sentiment of this product review: I love it\nAnswer: positive" in folded.system


def test_parity_report_refuses_a_gap_beyond_the_threshold() -> None:
    check_parity(ParityReport(dspy_score=0.9, pipeline_score=0.8, threshold=0.1, examples=10))
    with pytest.raises(ParityError) as refused:
        check_parity(ParityReport(dspy_score=1.0, pipeline_score=0.5, threshold=0.1, examples=4))
    message = str(refused.value)
    assert "0.500 in the pipeline against 1.000 in DSPy on 4 held-out examples" in message
    assert "gap 0.500 > --parity-threshold 0.100" in message
    assert "nothing was published" in message


# --- metrics ----------------------------------------------------------------------------------------


def test_exact_and_contains(spec) -> None:
    example = dspy.Example(review="x", label="Positive").with_inputs("review")
    exact = make_metric("exact", "label")
    contains = make_metric("contains", "label")
    assert exact(example, dspy.Prediction(label=" positive. ")) == 1.0
    assert exact(example, dspy.Prediction(label="very positive")) == 0.0
    assert contains(example, dspy.Prediction(label="It is POSITIVE overall")) == 1.0
    assert contains(example, dspy.Prediction(label="negative")) == 0.0
    assert exact(example, dspy.Prediction()) == 0.0


def test_callable_metric_and_its_errors() -> None:
    metric = make_metric("optimize_support:label_for", "label")  # any (a, b) callable
    assert metric.__name__ == "label_for"
    with pytest.raises(MetricError, match="expected exact, contains, judge or module:function"):
        make_metric("fuzzy", "label")
    with pytest.raises(MetricError, match="cannot import 'no_such_module'"):
        make_metric("no_such_module:f", "label")
    with pytest.raises(MetricError, match="has no function 'nope'"):
        make_metric("optimize_support:nope", "label")
    with pytest.raises(MetricError, match=r"must take \(example, prediction"):
        make_metric("os:getcwd", "label")


def test_judge_rates_through_its_lm() -> None:
    judge_lm = dspy.utils.DummyLM([{"rating": "9"}, {"rating": "3"}])
    metric = make_metric("judge", "label", judge_lm=judge_lm, task=lambda e: f"label: {e.review}")
    example = dspy.Example(review="x", label="positive").with_inputs("review")
    assert metric(example, dspy.Prediction(label="positive")) == 1.0
    assert metric(example, dspy.Prediction(label="meh")) == 0.0
    assert len(judge_lm.history) == 2
    assert "label: x" in judge_lm.history[0]["messages"][-1]["content"]  # the task it rated
    assert metric(example, dspy.Prediction(label="")) == 0.0  # nothing to rate: no call
    assert len(judge_lm.history) == 2


# --- data ---------------------------------------------------------------------------------------------


def test_jsonl_loading_and_split(spec, train_file) -> None:
    examples = load_jsonl(train_file, spec)
    assert len(examples) == len(REVIEWS)
    assert examples[0].inputs().toDict() == {"review": REVIEWS[0][0]}
    first = split(examples, 0.25, seed=3)
    again = split(examples, 0.25, seed=3)
    assert [e.review for e in first.dev] == [e.review for e in again.dev]
    assert len(first.dev) == 3 and len(first.train) == 9


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("{not json", r"train.jsonl:2: not JSON: .* at column 2"),
        ('["a list"]', r"train.jsonl:2: expected a JSON object with review, label"),
        ('{"review": "x"}', r"train.jsonl:2: missing 'label' \(step 'label' needs review, label; has review\)"),
        ('{"review": {"a": 1}, "label": "x"}', r"train.jsonl:2: 'review' must be a string, got dict"),
        ('{"review": "x", "label": "  "}', r"train.jsonl:2: 'label' is empty"),
    ],
)
def test_jsonl_errors_name_file_and_line(spec, tmp_path, line, error) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [{"review": "ok", "label": "positive"}, line])
    with pytest.raises(DataError, match=error):
        load_jsonl(path, spec)


def test_missing_or_empty_file(spec, tmp_path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        load_jsonl(tmp_path / "absent.jsonl", spec)
    with pytest.raises(DataError, match="no examples"):
        load_jsonl(write_jsonl(tmp_path / "empty.jsonl", ["", "  "]), spec)


def test_examples_from_executions(spec) -> None:
    def run(run_id: str, status: str, review: str, output: str, step_status: str = "completed"):
        return monitor_pb2.Execution(
            run_id=run_id, status=status, inputs={"review": review},
            steps=[common_pb2.StepResult(name="label", output=output, status=step_status)],
        )

    examples, skipped = from_executions(
        [run("a", "OK", "I love it", "positive"), run("b", "INTERNAL", "x", ""),
         run("c", "OK", "y", "", "failed")],
        spec,
    )
    assert [(e.review, e.label) for e in examples] == [("I love it", "positive")]
    assert skipped == ["run b: status INTERNAL", "run c: step 'label' has no completed output"]


# --- the whole flow -----------------------------------------------------------------------------------


def options(train_file: Path, **overrides) -> OptimizeOptions:
    base = dict(pipeline="review-sentiment", step="label", train=str(train_file), dev_fraction=0.34,
                guard=GuardOptions(metric="score", min_runs=4, significance=0.1, score_name="correct"))
    base.update(overrides)
    return OptimizeOptions(**base)


def test_optimize_publishes_a_better_prompt_with_its_guard(train_file, tmp_path) -> None:
    gateway = PipelineDouble()
    log = io.StringIO()
    progress = io.StringIO()
    saved = tmp_path / "program.json"
    result = optimize(gateway, options(train_file, save=str(saved)), lm_factory=lambda m, p: DemoLM(),
                      log=log, progress_out=progress)
    assert result.dspy_before == 0.0 and result.dspy_after == 1.0
    assert result.pipeline_before == 0.0 and result.pipeline_after == 1.0
    assert result.parity.ok and result.parity.gap == 0.0
    assert 1 <= result.demos <= 5
    assert len(gateway.published) == 1
    published = gateway.published[0]
    assert published["rollout_weight"] == 0.1
    assert published["guard"].metric == "score" and published["guard"].min_runs == 4
    assert published["guard"].score_name == "correct"
    assert published["source"] == "dspy:BootstrapFewShot"
    assert published["scores"]["parity_dev"] == 1.0 and published["scores"]["dspy_dev_before"] == 0.0
    template = published["template"]
    assert template.prompt == "Classify the sentiment of this product review: {{inputs.review}}"
    assert all(d.input.startswith("Classify the sentiment of this product review: ") for d in template.demos)
    # Every pipeline run sent the exported prompt as the step's candidate.
    assert all("label" in run.prompt_candidates for run in gateway.runs)
    assert len(gateway.runs) == 2 * result.dev_size
    assert "attempts tried, best score so far" in progress.getvalue()
    state = json.loads(saved.read_text())
    assert len(state["predict"]["demos"]) == result.demos
    assert result.version is not None and result.version.id == "v1"


def test_parity_gap_stops_the_publish(train_file) -> None:
    gateway = PipelineDouble(fixed_answer="positive")  # the pipeline disagrees with DSPy
    with pytest.raises(ParityError, match="nothing was published"):
        optimize(gateway, options(train_file), lm_factory=lambda m, p: DemoLM())
    assert gateway.published == []


def test_failed_pipeline_runs_score_zero_and_unreachable_stops(train_file) -> None:
    import grpc

    from elexirion_optimizer.client import GatewayError

    refused = GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "step label: {{x}} is not a known reference")
    gateway = PipelineDouble(fail_optimized_with=refused)
    with pytest.raises(ParityError) as gap:
        optimize(gateway, options(train_file), lm_factory=lambda m, p: DemoLM())
    assert gap.value.report.pipeline_score == 0.0 and gap.value.report.dspy_score == 1.0
    assert gateway.published == []

    down = GatewayError(grpc.StatusCode.UNAVAILABLE, "connection refused")
    gateway = PipelineDouble(fail_optimized_with=down)
    with pytest.raises(GatewayError, match="UNAVAILABLE"):
        optimize(gateway, options(train_file), lm_factory=lambda m, p: DemoLM())
    assert gateway.published == []


def test_random_search_compiles_and_publishes(train_file) -> None:
    gateway = PipelineDouble()
    progress = io.StringIO()
    result = optimize(gateway, options(train_file, optimizer="random-search", candidates=2),
                      lm_factory=lambda m, p: DemoLM(), progress_out=progress)
    assert result.optimizer == "BootstrapFewShotWithRandomSearch"
    assert result.pipeline_after == 1.0 and len(gateway.published) == 1
    assert "candidates tried, best score so far 1.00" in progress.getvalue()


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (dict(guard=GuardOptions(min_runs=5)), "need --guard-metric"),
        (dict(rollout_weight=0.0), "--guard-metric needs a --rollout-weight above 0"),
        (dict(write_yaml="p.yaml"), "--write-yaml publishes nothing"),
        (dict(rollout_weight=1.0), r"--rollout-weight must be in \[0, 1\)"),
        (dict(candidates=0), "--candidates must be at least 1"),
        (dict(from_executions=True), "not both"),
        (dict(optimizer="simba"), "expected one of bootstrap, random-search, mipro, gepa"),
    ],
)
def test_bad_options_are_refused_before_any_call(train_file, overrides, error) -> None:
    from elexirion_optimizer.optimize import OptionsError

    gateway = PipelineDouble()
    with pytest.raises(OptionsError, match=error):
        optimize(gateway, options(train_file, **overrides), lm_factory=lambda m, p: DemoLM())
    assert gateway.runs == [] and gateway.published == []


def test_a_step_reading_earlier_steps_replays_through_the_pipeline_inputs(train_file, tmp_path) -> None:
    yaml = PIPELINE_YAML.replace("{{inputs.review}}", "{{steps.first.output}}")
    # Without the pipeline's inputs in the examples, the replay is impossible: said before compiling.
    rows = [{"first_output": r, "label": l} for r, l in REVIEWS]
    data = write_jsonl(tmp_path / "steps.jsonl", rows)
    gateway = PipelineDouble(yaml=yaml)
    with pytest.raises(PipelineError, match=r"an example has no pipeline input 'review' \(step 'label' reads \{\{steps.first.output\}\}"):
        optimize(gateway, options(data), lm_factory=lambda m, p: DemoLM(fail_with=AssertionError("no LM call")))
    assert gateway.runs == []
    from elexirion_optimizer.program import pipeline_inputs_for

    spec = step_spec(yaml, "label")
    assert pipeline_inputs_for(spec, {"first_output": "x", "review": "the input"}) == {"review": "the input"}


def test_from_executions_reads_the_monitor_and_says_when_too_few(train_file) -> None:
    gateway = PipelineDouble()
    asked: list[dict] = []

    def iter_executions(pipeline, *, limit=None, **filters):
        asked.append({"pipeline": pipeline, "limit": limit, **filters})
        return iter([monitor_pb2.Execution(run_id="r1", status="OK", inputs={"review": "I love it"},
                                           steps=[common_pb2.StepResult(name="label", output="positive",
                                                                        status="completed")])])

    gateway.iter_executions = iter_executions  # type: ignore[attr-defined]
    with pytest.raises(DataError, match=r"1 usable completed runs of 'review-sentiment' with correct >= 1.0 \(need at least 2\)"):
        optimize(gateway, options(None, train=None, from_executions=True, min_score=1.0, score_name="correct"),
                 lm_factory=lambda m, p: DemoLM())
    assert asked == [{"pipeline": "review-sentiment", "limit": 500, "status": "OK", "min_score": 1.0,
                      "score_name": "correct"}]


def test_no_gain_publishes_nothing(train_file) -> None:
    gateway = PipelineDouble()
    with pytest.raises(NoGainError, match="no gain, so nothing was published"):
        optimize(gateway, options(train_file, max_labeled_demos=0, max_demos=0),
                 lm_factory=lambda m, p: DemoLM())
    assert gateway.published == []


def test_an_lm_failure_publishes_nothing(train_file) -> None:
    gateway = PipelineDouble()
    from elexirion_optimizer.optimize import OptimizeError

    with pytest.raises(OptimizeError, match="nothing was published and serving is untouched"):
        optimize(gateway, options(train_file),
                 lm_factory=lambda m, p: DemoLM(fail_with=RuntimeError("gateway down")))
    assert gateway.published == [] and gateway.runs == []


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    optimize_cli.register(commands)
    return parser.parse_args(["optimize", *argv])


def test_cli_table_json_and_interrupt(train_file, monkeypatch) -> None:
    monkeypatch.setattr("elexirion_optimizer.optimize._default_lm_factory", lambda gateway: lambda m, p: DemoLM())
    out, err = io.StringIO(), io.StringIO()
    args = cli_args("--pipeline", "review-sentiment", "--step", "label", "--train", str(train_file),
                    "--guard-metric", "score", "--guard-score-name", "correct", "--guard-min-runs", "4")
    assert optimize_cli.run(args, PipelineDouble(), out, err) == 0
    table = out.getvalue()
    assert "DSPy (in-process)" in table and "pipeline (ExecutePipeline)" in table
    assert "parity: DSPy 1.000, pipeline 1.000, gap 0.000 (threshold 0.100): ok" in table
    assert "published review-sentiment.label version v1 at 10% of runs against baseline yaml, guarded by score(correct)" in table

    out = io.StringIO()
    args = cli_args("--pipeline", "review-sentiment", "--step", "label", "--train", str(train_file), "--json")
    assert optimize_cli.run(args, PipelineDouble(), out, io.StringIO()) == 0
    document = json.loads(out.getvalue())
    assert document["published_version"] == "v1" and document["parity"]["ok"] is True
    assert document["scores"]["pipeline_dev_before"] == 0.0

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    gateway = PipelineDouble()
    monkeypatch.setattr(gateway, "execute_pipeline", interrupted)
    err = io.StringIO()
    assert optimize_cli.run(cli_args("--pipeline", "review-sentiment", "--step", "label", "--train",
                                     str(train_file)), gateway, io.StringIO(), err) == 130
    assert "interrupted: nothing was published" in err.getvalue()
    assert gateway.published == []

    gateway = PipelineDouble()
    monkeypatch.setattr(gateway, "publish_prompt_version", interrupted)
    err = io.StringIO()
    assert optimize_cli.run(cli_args("--pipeline", "review-sentiment", "--step", "label", "--train",
                                     str(train_file)), gateway, io.StringIO(), err) == 130
    assert "interrupted while publishing: the publish is atomic" in err.getvalue()

    err = io.StringIO()
    bad = write_jsonl(train_file.parent / "bad.jsonl", ['{"review": 1}'])
    assert optimize_cli.run(cli_args("--pipeline", "review-sentiment", "--step", "label", "--train",
                                     str(bad)), PipelineDouble(), io.StringIO(), err) == 2
    assert "bad.jsonl:1: missing 'label'" in err.getvalue()


# --- --write-yaml ---------------------------------------------------------------------------------------


def test_write_yaml_keeps_comments_and_layout(train_file, tmp_path) -> None:
    pipeline_file = tmp_path / "review-sentiment.yaml"
    original = PIPELINE_YAML.replace("  steps:\n", "  steps:\n    # the step the optimizer tunes\n")
    pipeline_file.write_text(original)
    gateway = PipelineDouble(yaml=original)
    result = optimize(gateway, options(train_file, write_yaml=str(pipeline_file), guard=GuardOptions()),
                      lm_factory=lambda m, p: DemoLM())
    assert gateway.published == []  # written, not published
    assert result.yaml_path == str(pipeline_file)
    text = pipeline_file.read_text()
    assert "# A review classifier (test copy of the shipped example)." in text
    assert "    # the step the optimizer tunes\n" in text
    assert "    review: { type: string, required: true }\n" in text
    assert 'prompt: "Classify the sentiment of this product review: {{inputs.review}}"' in text
    written = step_spec(text, "label")
    assert "Examples of the task:" in written.system and "Answer: " in written.system
    # The written step is what the parity check ran: its system text carried the examples.
    assert all(not run.prompt_candidates["label"].demos for run in gateway.runs)
    # Everything except the new system text is as it was.
    assert text.replace(text[text.index("      system:"):text.index("      prompt:")], "") == original


def test_write_yaml_refuses_another_pipeline(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE_YAML)
    from elexirion_optimizer.generated.elexirion.v1 import prompts_pb2

    with pytest.raises(PipelineError, match="this file is pipeline 'review-sentiment', not 'other'"):
        write_step_prompt(path, "other", "label", prompts_pb2.PromptTemplate(prompt="x"), "x")
    assert path.read_text() == PIPELINE_YAML


def test_step_program_compiles_with_bootstrap(spec, train_file) -> None:
    program = StepProgram(spec, DemoLM())
    examples = load_jsonl(train_file, spec)
    compiled = dspy.BootstrapFewShot(metric=make_metric("exact", "label"), max_bootstrapped_demos=5,
                                     max_labeled_demos=4).compile(program, trainset=examples)
    assert 0 < len(compiled.predict.demos) <= 5
    assert compiled(review="Superb lens").label == "positive"
