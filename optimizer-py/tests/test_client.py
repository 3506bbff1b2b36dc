"""GatewayClient against an in-process Python implementation of elexirion.v1.Gateway."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest

from elexirion_optimizer import GatewayClient, GatewayError
from elexirion_optimizer.generated.elexirion.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

ChatHandler = Callable[[gateway_pb2.ChatRequest, grpc.ServicerContext], gateway_pb2.ChatResponse]


class FakeGateway(gateway_pb2_grpc.GatewayServicer):
    """Answers Chat with ``chat_handler`` and echoes ExecutePipeline; records every request."""

    def __init__(self) -> None:
        self.requests: list[object] = []
        self.release = threading.Event()  # set at teardown to free handlers that wait on it
        self.chat_handler: ChatHandler = lambda request, context: gateway_pb2.ChatResponse()

    def Chat(
        self, request: gateway_pb2.ChatRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.ChatResponse:
        self.requests.append(request)
        return self.chat_handler(request, context)

    def ExecutePipeline(
        self, request: gateway_pb2.ExecutePipelineRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.ExecutePipelineResponse:
        self.requests.append(request)
        text = ",".join(f"{k}={v}" for k, v in sorted(request.inputs.items()))
        return gateway_pb2.ExecutePipelineResponse(
            result=text,
            pipeline=request.pipeline,
            job_id="job-2",
            steps=[common_pb2.StepResult(name="only", type="llm", output=text, attempts=1)],
        )


@dataclass
class Gateway:
    servicer: FakeGateway
    target: str
    clients: list[GatewayClient] = field(default_factory=list)

    def client(self, timeout: float | None = None) -> GatewayClient:
        client = GatewayClient(self.target, timeout=timeout)
        self.clients.append(client)
        return client


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    servicer = FakeGateway()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    gw = Gateway(servicer, f"127.0.0.1:{port}")
    try:
        yield gw
    finally:
        for client in gw.clients:
            client.close()
        servicer.release.set()
        server.stop(grace=None).wait(5)


def test_chat_returns_the_server_response(gateway: Gateway) -> None:
    expected = gateway_pb2.ChatResponse(
        response="hi there",
        pipeline_used="general",
        execution_time_ms=12,
        fallback_used=True,
        job_id="job-1",
        usage=common_pb2.Usage(input_tokens=3, output_tokens=5, cost_usd=0.25),
    )
    gateway.servicer.chat_handler = lambda request, context: expected

    with GatewayClient(gateway.target, timeout=5) as client:
        got = client.chat("hello", session_id="s-1", pipeline="general")

    assert got == expected
    assert gateway.servicer.requests == [
        gateway_pb2.ChatRequest(message="hello", session_id="s-1", pipeline="general")
    ]


def test_execute_pipeline_sends_inputs(gateway: Gateway) -> None:
    got = gateway.client(timeout=5).execute_pipeline("summarize", {"b": "2", "a": "1"})
    assert got.result == "a=1,b=2"
    assert got.pipeline == "summarize"
    assert [s.name for s in got.steps] == ["only"]


def test_server_error_surfaces_as_gateway_error(gateway: Gateway) -> None:
    def reject(
        request: gateway_pb2.ChatRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.ChatResponse:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "message must not be empty")

    gateway.servicer.chat_handler = reject
    with pytest.raises(GatewayError) as caught:
        gateway.client(timeout=5).chat("")
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details == "message must not be empty"
    assert "INVALID_ARGUMENT" in str(caught.value)


@pytest.mark.parametrize("default, per_call", [(0.2, None), (30.0, 0.2)])
def test_timeout_surfaces_as_deadline_exceeded(
    gateway: Gateway, default: float, per_call: float | None
) -> None:
    def stall(
        request: gateway_pb2.ChatRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.ChatResponse:
        gateway.servicer.release.wait(10)
        return gateway_pb2.ChatResponse(response="too late")

    gateway.servicer.chat_handler = stall
    with pytest.raises(GatewayError) as caught:
        gateway.client(timeout=default).chat("hello", timeout=per_call)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


def test_unreachable_gateway_is_unavailable(free_port: Callable[[], int]) -> None:
    with GatewayClient(f"127.0.0.1:{free_port()}", timeout=5) as client:
        with pytest.raises(GatewayError) as caught:
            client.chat("hello")
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
