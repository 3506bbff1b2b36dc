"""ElexirionLM with the real DSPy against an in-process gateway (gateway_fake): every LM call DSPy
makes is one Gateway.Complete; usage, cost, cache, n, async and errors as DSPy expects them."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import dspy
import grpc
import pytest
from dspy.clients.cache import Cache
from dspy.utils.exceptions import (
    LMAuthError,
    LMInvalidRequestError,
    LMServerError,
    LMTimeoutError,
    LMUnsupportedFeatureError,
)
from dspy.utils.usage_tracker import track_usage
from gateway_fake import FakeGateway, fake_gateway, refuse  # noqa: F401 (fixture)

from elexirion_optimizer import ElexirionLM, GatewayError
from elexirion_optimizer.generated.elexirion.v1 import common_pb2, executor_pb2, provider_pb2

COST_USD = 0.0025


def dspy_answer(request: provider_pb2.CompleteRequest, context: grpc.ServicerContext) -> Any:
    """Answers in DSPy's ChatAdapter format, echoing the last user message's length."""
    last = request.messages[-1].content
    return provider_pb2.CompleteResponse(
        text=f"[[ ## answer ## ]]\n{len(last)}\n\n[[ ## completed ## ]]",
        finish_reason="stop",
        provider="mock",
        model="mock-echo",
        alias=request.model,
        attempts=1,
        latency_ms=3,
        usage=common_pb2.Usage(input_tokens=11, output_tokens=7, cost_usd=COST_USD),
    )


@pytest.fixture(autouse=True)
def isolated_dspy() -> Iterator[None]:
    """A fresh in-memory DSPy cache and settings per test (no disk cache shared across runs)."""
    saved = dspy.cache
    dspy.cache = Cache(
        enable_disk_cache=False, enable_memory_cache=True, disk_cache_dir=None
    )
    try:
        with dspy.context(lm=None):
            yield
    finally:
        dspy.cache = saved


@pytest.fixture
def lm_on(fake_gateway: FakeGateway) -> Iterator[Any]:
    """Makes ElexirionLMs on the fake gateway (answering dspy_answer); closed after the test."""
    fake_gateway.handlers["Complete"] = dspy_answer
    made: list[ElexirionLM] = []

    def make(**kwargs: Any) -> ElexirionLM:
        kwargs.setdefault("gateway", fake_gateway.client(api_key="elx_lm_key"))
        lm = ElexirionLM(kwargs.pop("model", "mock"), **kwargs)
        made.append(lm)
        return lm

    yield make
    for lm in made:
        lm.close()


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


def test_a_predict_goes_through_complete_with_its_settings(
    lm_on: Any, fake_gateway: FakeGateway
) -> None:
    lm = lm_on(preset="analysis", temperature=0.2, max_tokens=300, metadata={"source": "dspy"})
    question = unique("how long is this question?")
    with dspy.context(lm=lm):
        prediction = dspy.Predict("question -> answer")(question=question)

    (request,) = fake_gateway.requests("Complete")
    assert request.model == "mock" and request.preset == "analysis"
    assert request.temperature == pytest.approx(0.2) and request.max_tokens == 300
    assert dict(request.metadata) == {"source": "dspy"}
    # DSPy's ChatAdapter: its instructions as the system text, the question as the user message.
    assert "`question`" in request.system and "`answer`" in request.system
    assert [m.role for m in request.messages] == [common_pb2.ROLE_USER]
    assert question in request.messages[0].content
    assert prediction.answer == str(len(request.messages[0].content))
    assert fake_gateway.servicer.calls[0].metadata["authorization"] == "Bearer elx_lm_key"


def test_demos_become_user_and_assistant_messages(lm_on: Any, fake_gateway: FakeGateway) -> None:
    lm = lm_on()
    predict = dspy.Predict("question -> answer")
    predict.demos = [dspy.Example(question="2+2?", answer="4")]
    with dspy.context(lm=lm):
        predict(question=unique("3+3?"))
    (request,) = fake_gateway.requests("Complete")
    assert [m.role for m in request.messages] == [
        common_pb2.ROLE_USER,
        common_pb2.ROLE_ASSISTANT,
        common_pb2.ROLE_USER,
    ]
    assert "2+2?" in request.messages[0].content and "4" in request.messages[1].content


def test_usage_and_the_gateways_cost_reach_dspy(lm_on: Any) -> None:
    lm = lm_on()
    with dspy.context(lm=lm), track_usage() as tracker:
        dspy.Predict("question -> answer")(question=unique("q"))
    totals = tracker.get_total_tokens()[lm.model]
    assert totals["prompt_tokens"] == 11 and totals["completion_tokens"] == 7
    entry = lm.history[-1]
    assert entry["cost"] == pytest.approx(COST_USD)
    assert entry["usage"]["total_tokens"] == 18
    assert entry["response_model"] == "mock/mock-echo"
    assert lm.model == "elexirion/mock"


def test_a_repeated_request_is_answered_from_dspys_cache(
    lm_on: Any, fake_gateway: FakeGateway
) -> None:
    lm = lm_on()
    question = unique("cached?")
    with dspy.context(lm=lm), track_usage() as tracker:
        first = dspy.Predict("question -> answer")(question=question)
        second = dspy.Predict("question -> answer")(question=question)
    assert first.answer == second.answer
    assert len(fake_gateway.requests("Complete")) == 1
    # A cache hit adds no usage (dspy.LM's rule).
    assert tracker.get_total_tokens()[lm.model]["prompt_tokens"] == 11


def test_cache_off_calls_the_gateway_every_time(lm_on: Any, fake_gateway: FakeGateway) -> None:
    lm = lm_on(cache=False)
    question = unique("not cached")
    with dspy.context(lm=lm):
        dspy.Predict("question -> answer")(question=question)
        dspy.Predict("question -> answer")(question=question)
    assert len(fake_gateway.requests("Complete")) == 2


def test_another_preset_is_another_cache_entry(lm_on: Any, fake_gateway: FakeGateway) -> None:
    lm = lm_on()
    other = lm.copy(preset="production")
    lm("same prompt")
    other("same prompt")
    assert [r.preset for r in fake_gateway.requests("Complete")] == ["", "production"]
    assert other.model == "elexirion/mock@production"


def test_n_candidates_make_n_gateway_calls(lm_on: Any, fake_gateway: FakeGateway) -> None:
    lm = lm_on()
    with dspy.context(lm=lm):
        prediction = dspy.Predict("question -> answer", n=3)(question=unique("three"))
    assert len(prediction.completions) == 3
    assert len(fake_gateway.requests("Complete")) == 3
    assert lm.history[-1]["cost"] == pytest.approx(3 * COST_USD)


def test_async_calls_go_through_complete(lm_on: Any, fake_gateway: FakeGateway) -> None:
    lm = lm_on()

    async def ask() -> Any:
        with dspy.context(lm=lm):
            return await dspy.Predict("question -> answer").acall(question=unique("async"))

    prediction = asyncio.run(ask())
    (request,) = fake_gateway.requests("Complete")
    assert prediction.answer == str(len(request.messages[0].content))


def test_stop_sequences_are_sent(lm_on: Any, fake_gateway: FakeGateway) -> None:
    lm_on()(unique("hi"), stop=["[[ ## completed"])
    (request,) = fake_gateway.requests("Complete")
    assert list(request.stop_sequences) == ["[[ ## completed"]


def test_settings_complete_cannot_carry_are_refused_not_dropped(
    lm_on: Any, fake_gateway: FakeGateway
) -> None:
    lm = lm_on()
    with pytest.raises(LMUnsupportedFeatureError, match="top_p"):
        lm(unique("hi"), top_p=0.5)
    assert fake_gateway.requests("Complete") == []


def test_a_refused_key_is_an_auth_error_naming_the_scope(
    lm_on: Any, fake_gateway: FakeGateway
) -> None:
    lm = lm_on()
    fake_gateway.handlers["Complete"] = refuse(
        grpc.StatusCode.PERMISSION_DENIED, 'API key "reader" lacks the "chat" scope Complete needs'
    )
    with pytest.raises(LMAuthError) as caught:
        with dspy.context(lm=lm):
            dspy.Predict("question -> answer")(question=unique("q"))
    text = str(caught.value)
    assert "Complete needs an API key with the 'chat' scope" in text
    assert "ELEXIRION_API_KEY" in text
    assert isinstance(caught.value.__cause__.__cause__, GatewayError)
    assert len(fake_gateway.requests("Complete")) == 1  # not retried


def test_invalid_requests_are_not_retried(lm_on: Any, fake_gateway: FakeGateway) -> None:
    lm = lm_on(num_retries=3)
    fake_gateway.handlers["Complete"] = refuse(
        grpc.StatusCode.INVALID_ARGUMENT, "max_tokens: must be at most 8192"
    )
    with pytest.raises(LMInvalidRequestError, match="max_tokens: must be at most 8192"):
        lm(unique("hi"))
    assert len(fake_gateway.requests("Complete")) == 1


def test_transient_failures_are_retried_then_reported(
    lm_on: Any, fake_gateway: FakeGateway
) -> None:
    lm = lm_on(num_retries=1)
    fake_gateway.handlers["Complete"] = refuse(
        grpc.StatusCode.UNAVAILABLE, "every target of mock failed"
    )
    with pytest.raises(LMServerError, match="every target of mock failed"):
        lm(unique("hi"))
    assert len(fake_gateway.requests("Complete")) == 2


def test_dump_and_load_state_keep_the_model_and_never_the_key(
    lm_on: Any, fake_gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = lm_on(preset="test", temperature=0.0, max_tokens=128, timeout=7.5)
    state = lm.dump_state()
    assert "elx_lm_key" not in repr(state)
    monkeypatch.setenv("ELEXIRION_API_KEY", "elx_from_env")
    loaded = dspy.BaseLM.load_state(state, allow_custom_lm_class=True)
    try:
        assert isinstance(loaded, ElexirionLM)
        assert (loaded.alias, loaded.preset, loaded.model) == ("mock", "test", lm.model)
        assert loaded.kwargs["max_tokens"] == 128
        loaded(unique("loaded"))
    finally:
        loaded.close()
    assert fake_gateway.servicer.calls[-1].metadata["authorization"] == "Bearer elx_from_env"


def test_copies_share_the_gateway_and_close_leaves_it_to_the_original(
    lm_on: Any, fake_gateway: FakeGateway
) -> None:
    lm = lm_on(gateway=fake_gateway.target)
    hotter = lm.copy(temperature=0.9)
    hotter.close()  # a copy does not own the channel
    hotter(unique("still open"))
    (request,) = fake_gateway.requests("Complete")
    assert request.temperature == pytest.approx(0.9)
    assert hotter.gateway is lm.gateway


def test_dspys_json_adapter_asks_the_gateway_for_json_fitting_the_signature(
    lm_on: Any, fake_gateway: FakeGateway
) -> None:
    def json_answer(request: provider_pb2.CompleteRequest, context: grpc.ServicerContext) -> Any:
        schema = json.loads(request.json_schema)
        assert schema["properties"]["answer"]["type"] == "integer"
        return provider_pb2.CompleteResponse(
            text='Sure! {"answer": 4}', json='{"answer": 4}', provider="mock", model="mock-json"
        )

    fake_gateway.handlers["Complete"] = json_answer
    lm = lm_on()
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        prediction = dspy.Predict("question -> answer: int")(question=unique("2+2?"))
    assert prediction.answer == 4
    (request,) = fake_gateway.requests("Complete")
    assert request.json_schema


def test_json_mode_asks_for_any_object(lm_on: Any, fake_gateway: FakeGateway) -> None:
    lm_on()(unique("json please"), response_format={"type": "json_object"})
    (request,) = fake_gateway.requests("Complete")
    assert json.loads(request.json_schema) == {"type": "object"}


def test_a_call_past_its_deadline_is_a_timeout(lm_on: Any, fake_gateway: FakeGateway) -> None:
    release = threading.Event()

    def stall(request: provider_pb2.CompleteRequest, context: grpc.ServicerContext) -> Any:
        release.wait(10)
        return provider_pb2.CompleteResponse(text="too late")

    fake_gateway.handlers["Complete"] = stall
    lm = lm_on(timeout=0.3, num_retries=0)
    try:
        with pytest.raises(LMTimeoutError, match="DEADLINE_EXCEEDED"):
            lm(unique("slow"))
    finally:
        release.set()


def test_timeout_defaults(fake_gateway: FakeGateway) -> None:
    shared = fake_gateway.client(timeout=7.0)
    borrowed = ElexirionLM("mock", gateway=shared)
    own = ElexirionLM("mock", gateway=fake_gateway.target)
    try:
        assert borrowed._engine_spec.timeout is None  # the client's own default applies
        assert own.gateway.timeout == 120.0
    finally:
        borrowed.close()
        own.close()
    # The borrowed client is still open: closing the LM left it to its owner.
    fake_gateway.handlers["ListPipelines"] = lambda request, context: (
        executor_pb2.ListPipelinesResponse()
    )
    shared.list_pipelines()


def test_dspy_deep_copies_programs_holding_the_lm_without_a_fallback(
    lm_on: Any, fake_gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    lm = lm_on(temperature=0.0)
    predict = dspy.Predict("question -> answer")
    predict.lm = lm
    lm(unique("history"))
    copied = predict.deepcopy()
    assert "Failed to deep copy" not in caplog.text
    assert copied.lm is not lm and copied.lm.gateway is lm.gateway
    assert copied.lm.history == [] and len(lm.history) == 1
    copied.lm(unique("through the copy"))
    assert len(fake_gateway.requests("Complete")) == 2
    assert copy.deepcopy(lm.gateway) is lm.gateway
