"""Typed, blocking client for Elexirion's public gRPC API (``elexirion.v1.Gateway``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import grpc

try:
    from elexirion_optimizer.generated.elexirion.v1 import gateway_pb2, gateway_pb2_grpc
except ModuleNotFoundError as err:  # pragma: no cover - only without generated stubs
    raise ImportError(
        "elexirion_optimizer's gRPC stubs are not generated: run scripts/setup-python.sh"
    ) from err

__all__ = ["GatewayClient", "GatewayError"]


class GatewayError(Exception):
    """A gateway call failed; carries the gRPC status code and the server's details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> GatewayError:
        """Builds a GatewayError from a failed call (grpc raises RpcErrors that are also Calls)."""
        code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = err.details() if isinstance(err, grpc.Call) else str(err)
        return cls(code, details or "")


class GatewayClient:
    """Client for the gateway at ``target`` (e.g. ``"127.0.0.1:50051"``), over an insecure channel.

    ``timeout`` is the default deadline in seconds for every call (``None``: no deadline); each
    method's ``timeout`` argument overrides it. ``api_key`` is sent as ``authorization: Bearer``
    on every call (the gateway asks for one unless it runs with ``GATEWAY_AUTH=off``). Failed
    calls raise :class:`GatewayError`.
    Use as a context manager, or call :meth:`close`, to close the channel.
    """

    def __init__(
        self,
        target: str,
        timeout: float | None = None,
        *,
        api_key: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._channel = grpc.insecure_channel(target, options=list(options))
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)

    def chat(
        self,
        message: str,
        session_id: str = "",
        pipeline: str = "",
        timeout: float | None = None,
    ) -> gateway_pb2.ChatResponse:
        """Answers ``message``; ``pipeline`` forces a pipeline instead of the agent's routing."""
        request = gateway_pb2.ChatRequest(message=message, session_id=session_id, pipeline=pipeline)
        try:
            response: gateway_pb2.ChatResponse = self._stub.Chat(
                request, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise GatewayError.from_rpc_error(err) from err
        return response

    def execute_pipeline(
        self,
        pipeline: str,
        inputs: Mapping[str, str],
        timeout: float | None = None,
    ) -> gateway_pb2.ExecutePipelineResponse:
        """Runs the pipeline named ``pipeline`` with string ``inputs``."""
        request = gateway_pb2.ExecutePipelineRequest(pipeline=pipeline, inputs=dict(inputs))
        try:
            response: gateway_pb2.ExecutePipelineResponse = self._stub.ExecutePipeline(
                request, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise GatewayError.from_rpc_error(err) from err
        return response

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _deadline(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout
