"""An in-process elexirion.v1.Gateway for offline tests: real gRPC on loopback, canned answers.

Each unary call records its request and caller metadata and answers with the handler the test
set for it (``fake.handlers["ListPromptVersions"] = ...``); a call without one answers
UNIMPLEMENTED, so a test sees exactly which calls a client made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from elexirion_optimizer import GatewayClient
from elexirion_optimizer.generated.elexirion.v1 import gateway_pb2, gateway_pb2_grpc

Handler = Callable[[Any, grpc.ServicerContext], Message]


@dataclass
class Call:
    method: str
    request: Any
    metadata: dict[str, str]


class FakeGatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.calls: list[Call] = []

    def requests(self, method: str) -> list[Any]:
        """The requests ``method`` received, in order."""
        return [call.request for call in self.calls if call.method == method]


def _unary(name: str) -> Callable[[FakeGatewayServicer, Any, grpc.ServicerContext], Message]:
    def method(self: FakeGatewayServicer, request: Any, context: grpc.ServicerContext) -> Message:
        metadata = {key: value for key, value in context.invocation_metadata()}
        self.calls.append(Call(name, request, metadata))
        handler = self.handlers.get(name)
        if handler is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"the fake gateway has no {name}")
        return handler(request, context)

    method.__name__ = name
    return method


for _method in gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].methods:
    if not _method.server_streaming:
        setattr(FakeGatewayServicer, _method.name, _unary(_method.name))


def answer(response: Message) -> Handler:
    """A handler answering ``response`` to every request."""
    return lambda request, context: response


def refuse(code: grpc.StatusCode, details: str) -> Handler:
    """A handler failing every request with ``code`` and ``details``."""

    def handler(request: Any, context: grpc.ServicerContext) -> Message:
        context.abort(code, details)
        raise AssertionError("unreachable")  # abort raises

    return handler


@dataclass
class FakeGateway:
    servicer: FakeGatewayServicer
    target: str
    clients: list[GatewayClient] = field(default_factory=list)

    @property
    def handlers(self) -> dict[str, Handler]:
        return self.servicer.handlers

    def requests(self, method: str) -> list[Any]:
        return self.servicer.requests(method)

    def client(self, timeout: float | None = 5.0, api_key: str | None = None) -> GatewayClient:
        client = GatewayClient(self.target, timeout=timeout, api_key=api_key)
        self.clients.append(client)
        return client


@pytest.fixture
def fake_gateway() -> Iterator[FakeGateway]:
    """A fake gateway on a loopback port; its server and every client it made are closed after."""
    servicer = FakeGatewayServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    fake = FakeGateway(servicer, f"127.0.0.1:{port}")
    try:
        yield fake
    finally:
        for client in fake.clients:
            client.close()
        server.stop(grace=None).wait(5)
