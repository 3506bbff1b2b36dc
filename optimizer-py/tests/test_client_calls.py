"""GatewayClient's optimizer and lifecycle calls against an in-process gateway (gateway_fake)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from gateway_fake import FakeGateway, answer, fake_gateway, refuse  # noqa: F401 (fixture)

from elexirion_optimizer import GatewayClient, GatewayError
from elexirion_optimizer.client import required_scope
from elexirion_optimizer.generated.elexirion.v1 import (
    common_pb2,
    executor_pb2,
    gateway_pb2,
    monitor_pb2,
    prompts_pb2,
    provider_pb2,
)

WHEN = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TEMPLATE = prompts_pb2.PromptTemplate(
    prompt="Review {{inputs.code}}",
    system="You are terse.",
    demos=[prompts_pb2.PromptDemo(input="def f(): pass", output="fine")],
)
GUARD = prompts_pb2.PromptRolloutGuard(metric="success_rate", min_runs=20, significance=0.01)


def _stamp(when: datetime) -> Any:
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


# (method, the client call, the request the gateway must receive, a response to answer)
CALLS: list[tuple[str, Callable[[GatewayClient], Any], Any, Any]] = [
    (
        "Complete",
        lambda c: c.complete(
            [("user", "hi"), ("assistant", "hello"), ("user", "again")],
            system="be brief",
            model="mock",
            preset="test",
            temperature=0.0,
            max_tokens=64,
            stop=["END"],
            metadata={"source": "test"},
        ),
        provider_pb2.CompleteRequest(
            messages=[
                common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content="hi"),
                common_pb2.ChatMessage(role=common_pb2.ROLE_ASSISTANT, content="hello"),
                common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content="again"),
            ],
            system="be brief",
            model="mock",
            preset="test",
            temperature=0.0,
            max_tokens=64,
            stop_sequences=["END"],
            metadata={"source": "test"},
        ),
        provider_pb2.CompleteResponse(text="ok", provider="mock", model="mock-1"),
    ),
    (
        "GetPipeline",
        lambda c: c.get_pipeline("analysis"),
        executor_pb2.GetPipelineRequest(pipeline="analysis"),
        executor_pb2.GetPipelineResponse(yaml="name: analysis"),
    ),
    (
        "ListPipelines",
        lambda c: c.list_pipelines(),
        executor_pb2.ListPipelinesRequest(),
        executor_pb2.ListPipelinesResponse(
            pipelines=[executor_pb2.PipelineSummary(name="analysis", valid=True)]
        ),
    ),
    (
        "ExecutePipeline",
        lambda c: c.execute_pipeline(
            "analysis",
            {"code": "x = 1"},
            prompt_overrides={"summarize": "Say it short"},
            prompt_candidates={"review": TEMPLATE},
            session_id="s-1",
        ),
        gateway_pb2.ExecutePipelineRequest(
            pipeline="analysis",
            inputs={"code": "x = 1"},
            prompt_overrides={"summarize": "Say it short"},
            prompt_candidates={"review": TEMPLATE},
            session_id="s-1",
        ),
        gateway_pb2.ExecutePipelineResponse(result="done", job_id="run-1"),
    ),
    (
        "ListExecutions",
        lambda c: c.list_executions(
            "analysis",
            status="OK",
            prompt_version="v2",
            start_time=WHEN,
            min_score=0.5,
            score_name="correct",
            page_size=10,
            page_token="t1",
        ),
        monitor_pb2.ListExecutionsRequest(
            pipeline="analysis",
            status="OK",
            prompt_version="v2",
            start_time=_stamp(WHEN),
            min_score=0.5,
            score_name="correct",
            page_size=10,
            page_token="t1",
        ),
        monitor_pb2.ListExecutionsResponse(),
    ),
    (
        "RecordFeedback",
        lambda c: c.record_feedback("run-1", "correct", score=1.0, comment="matches"),
        monitor_pb2.RecordFeedbackRequest(
            run_id="run-1",
            feedback=monitor_pb2.Feedback(
                name="correct",
                score=1.0,
                comment="matches",
                source=monitor_pb2.FEEDBACK_SOURCE_CODE,
            ),
        ),
        monitor_pb2.RecordFeedbackResponse(),
    ),
    (
        "GetPromptVersionStats",
        lambda c: c.get_prompt_version_stats("analysis", "review", start_time=WHEN, score_name="x"),
        monitor_pb2.GetPromptVersionStatsRequest(
            pipeline="analysis", step="review", start_time=_stamp(WHEN), score_name="x"
        ),
        monitor_pb2.GetPromptVersionStatsResponse(),
    ),
    (
        "ListPromptVersions",
        lambda c: c.list_prompt_versions("analysis", "review"),
        prompts_pb2.ListPromptVersionsRequest(pipeline="analysis", step="review"),
        prompts_pb2.ListPromptVersionsResponse(),
    ),
    (
        "PublishPromptVersion",
        lambda c: c.publish_prompt_version(
            "analysis",
            "review",
            TEMPLATE,
            version_id="v3",
            source="dspy:BootstrapFewShot",
            description="demos",
            scores={"dspy_dev": 0.9},
            rollout_weight=0.1,
            guard=GUARD,
            reason="better on dev",
            expected_revision=7,
        ),
        prompts_pb2.PublishPromptVersionRequest(
            pipeline="analysis",
            step="review",
            version_id="v3",
            template=TEMPLATE,
            source="dspy:BootstrapFewShot",
            description="demos",
            scores={"dspy_dev": 0.9},
            rollout_weight=0.1,
            guard=GUARD,
            reason="better on dev",
            expected_revision=7,
        ),
        prompts_pb2.PublishPromptVersionResponse(),
    ),
    (
        "SetPromptRollout",
        lambda c: c.set_prompt_rollout(
            "analysis",
            "review",
            {"yaml": 0.8, "v3": 0.2},
            candidate="v3",
            guard=GUARD,
            baseline_protected=False,
            reason="more traffic",
            expected_revision=8,
        ),
        prompts_pb2.SetPromptRolloutRequest(
            pipeline="analysis",
            step="review",
            weights={"yaml": 0.8, "v3": 0.2},
            candidate="v3",
            guard=GUARD,
            baseline_protected=False,
            reason="more traffic",
            expected_revision=8,
        ),
        prompts_pb2.SetPromptRolloutResponse(),
    ),
    (
        "PromotePromptVersion",
        lambda c: c.promote_prompt_version("analysis", "review", "v3", reason="won", expected_revision=9),
        prompts_pb2.PromotePromptVersionRequest(
            pipeline="analysis", step="review", version_id="v3", reason="won", expected_revision=9
        ),
        prompts_pb2.PromotePromptVersionResponse(),
    ),
    (
        "RollbackPrompt",
        lambda c: c.rollback_prompt("analysis", "review", to_version="yaml", reason="worse"),
        prompts_pb2.RollbackPromptRequest(
            pipeline="analysis", step="review", to_version="yaml", reason="worse"
        ),
        prompts_pb2.RollbackPromptResponse(),
    ),
    (
        "GetPromptHistory",
        lambda c: c.get_prompt_history("analysis", "review", page_size=5, page_token="p2"),
        prompts_pb2.GetPromptHistoryRequest(
            pipeline="analysis", step="review", page_size=5, page_token="p2"
        ),
        prompts_pb2.GetPromptHistoryResponse(),
    ),
]


@pytest.mark.parametrize("method, call, expected, response", CALLS, ids=[c[0] for c in CALLS])
def test_each_call_sends_its_request_and_returns_the_answer(
    fake_gateway: FakeGateway,
    method: str,
    call: Callable[[GatewayClient], Any],
    expected: Any,
    response: Any,
) -> None:
    fake_gateway.handlers[method] = answer(response)
    got = call(fake_gateway.client(api_key="elx_k1_secret"))
    assert got == response
    assert fake_gateway.requests(method) == [expected]
    assert fake_gateway.servicer.calls[0].metadata["authorization"] == "Bearer elx_k1_secret"


def test_unset_optional_fields_stay_unset(fake_gateway: FakeGateway) -> None:
    """temperature 0 is not "no temperature"; left out, the gateway applies the preset's."""
    fake_gateway.handlers["Complete"] = answer(provider_pb2.CompleteResponse())
    fake_gateway.handlers["SetPromptRollout"] = answer(prompts_pb2.SetPromptRolloutResponse())
    fake_gateway.handlers["ListExecutions"] = answer(monitor_pb2.ListExecutionsResponse())
    client = fake_gateway.client()
    client.complete([("user", "hi")])
    client.set_prompt_rollout("p", "s", {"yaml": 1.0})
    client.list_executions("p")
    (complete,) = fake_gateway.requests("Complete")
    assert not complete.HasField("temperature") and not complete.HasField("max_tokens")
    (rollout,) = fake_gateway.requests("SetPromptRollout")
    assert not rollout.HasField("baseline_protected") and not rollout.HasField("guard")
    (executions,) = fake_gateway.requests("ListExecutions")
    assert not executions.HasField("min_score") and not executions.HasField("start_time")


def test_iter_executions_follows_page_tokens_and_stops_at_the_limit(
    fake_gateway: FakeGateway,
) -> None:
    pages = {
        "": monitor_pb2.ListExecutionsResponse(
            executions=[monitor_pb2.Execution(run_id="r1"), monitor_pb2.Execution(run_id="r2")],
            next_page_token="t2",
        ),
        "t2": monitor_pb2.ListExecutionsResponse(
            executions=[monitor_pb2.Execution(run_id="r3")], next_page_token="t3"
        ),
        "t3": monitor_pb2.ListExecutionsResponse(executions=[monitor_pb2.Execution(run_id="r4")]),
    }
    fake_gateway.handlers["ListExecutions"] = lambda request, context: pages[request.page_token]
    client = fake_gateway.client()

    every = [e.run_id for e in client.iter_executions("analysis", status="OK", page_size=2)]
    assert every == ["r1", "r2", "r3", "r4"]
    requests = fake_gateway.requests("ListExecutions")
    assert [r.page_token for r in requests] == ["", "t2", "t3"]
    assert all(r.pipeline == "analysis" and r.status == "OK" and r.page_size == 2 for r in requests)

    limited = [e.run_id for e in client.iter_executions("analysis", limit=3)]
    assert limited == ["r1", "r2", "r3"]
    assert len(fake_gateway.requests("ListExecutions")) == 3 + 2  # no page read past the limit


def test_iter_prompt_history_reads_every_page(fake_gateway: FakeGateway) -> None:
    pages = {
        "": prompts_pb2.GetPromptHistoryResponse(
            changes=[prompts_pb2.PromptChange(action="promote", revision=3)], next_page_token="n"
        ),
        "n": prompts_pb2.GetPromptHistoryResponse(
            changes=[prompts_pb2.PromptChange(action="publish", revision=2)]
        ),
    }
    fake_gateway.handlers["GetPromptHistory"] = lambda request, context: pages[request.page_token]
    changes = list(fake_gateway.client().iter_prompt_history("analysis"))
    assert [c.revision for c in changes] == [3, 2]


def test_required_scope_comes_from_the_proto() -> None:
    assert required_scope("PublishPromptVersion") == "prompts:write"
    assert required_scope("ListPromptVersions") == "pipelines"
    assert required_scope("Complete") == "chat"
    assert required_scope("GetPromptVersionStats") == "telemetry"


def test_permission_denied_names_the_scope_the_call_needs(fake_gateway: FakeGateway) -> None:
    fake_gateway.handlers["PublishPromptVersion"] = refuse(
        grpc.StatusCode.PERMISSION_DENIED, 'API key "reader" lacks the "prompts:write" scope'
    )
    with pytest.raises(GatewayError) as caught:
        fake_gateway.client(api_key="elx_r_x").publish_prompt_version("p", "s", TEMPLATE)
    error = caught.value
    assert error.code is grpc.StatusCode.PERMISSION_DENIED
    assert error.method == "PublishPromptVersion"
    assert not error.unreachable
    assert str(error).startswith(
        "PERMISSION_DENIED: PublishPromptVersion needs an API key with the 'prompts:write' scope"
    )


@pytest.mark.parametrize(
    "api_key, said", [(None, "needs an API key (none was sent)"), ("elx_bad_key", "refused the API key")]
)
def test_unauthenticated_says_whether_a_key_was_sent(
    fake_gateway: FakeGateway, api_key: str | None, said: str
) -> None:
    fake_gateway.handlers["ListPromptVersions"] = refuse(
        grpc.StatusCode.UNAUTHENTICATED, "unknown API key"
    )
    with pytest.raises(GatewayError) as caught:
        fake_gateway.client(api_key=api_key).list_prompt_versions()
    assert str(caught.value) == (
        f"UNAUTHENTICATED: the gateway at {fake_gateway.target} {said}: unknown API key"
    )
    assert "elx_bad_key" not in str(caught.value)


def test_unreachable_gateway_says_where_it_looked(free_port: Callable[[], int]) -> None:
    target = f"127.0.0.1:{free_port()}"
    with GatewayClient(target, timeout=5) as client:
        with pytest.raises(GatewayError) as caught:
            client.list_prompt_versions()
    error = caught.value
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert error.unreachable
    assert str(error).startswith(f"UNAVAILABLE: cannot reach the gateway at {target}")


def test_unavailable_from_a_reachable_gateway_is_its_own_answer(fake_gateway: FakeGateway) -> None:
    fake_gateway.handlers["Complete"] = refuse(
        grpc.StatusCode.UNAVAILABLE, "every target of mock failed"
    )
    with pytest.raises(GatewayError) as caught:
        fake_gateway.client().complete([("user", "hi")])
    assert not caught.value.unreachable
    assert str(caught.value) == "UNAVAILABLE: every target of mock failed"


def test_bad_arguments_are_refused_before_any_call(fake_gateway: FakeGateway) -> None:
    client = fake_gateway.client()
    with pytest.raises(ValueError, match="timezone-aware"):
        client.list_executions("p", start_time=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="role must be one of"):
        client.complete([("robot", "hi")])
    assert fake_gateway.servicer.calls == []
