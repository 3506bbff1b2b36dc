"""ElexirionLM: a DSPy language model whose every call is one ``Gateway.Complete``.

DSPy 3.4 replaced custom LMs' ``forward()`` (deprecated, removed in 3.5) with engines: an object
with ``complete(Request) -> Response`` handed to ``dspy.LM(engine=...)``, while DSPy keeps the
cache, retries, ``n`` candidates, history, usage tracking and callbacks. ``ElexirionLM`` is that
``dspy.LM`` (so a ``dspy.BaseLM``) with :class:`GatewayEngine`: DSPy's own machinery, the
platform's model aliases, presets, fallbacks, limits, telemetry and cost.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import dspy
import grpc
from dspy import lm15
from dspy.clients.base_lm import LM_CLASS_STATE_KEY

from elexirion_optimizer.client import GatewayClient, GatewayError
from elexirion_optimizer.generated.elexirion.v1 import common_pb2, provider_pb2

__all__ = ["AsyncGatewayEngine", "ElexirionLM", "GatewayEngine", "DEFAULT_GATEWAY"]

DEFAULT_GATEWAY = "127.0.0.1:50051"
#: The deadline of each call when the LM opens its own client (LLM calls can take a while).
DEFAULT_TIMEOUT_S = 120.0
#: Where a response's gateway figures (cost, who served it) live in lm15's provider_data.
PROVIDER_DATA_KEY = "elexirion"
_PROVIDER = "elexirion"
_ROLES = {"user": common_pb2.ROLE_USER, "assistant": common_pb2.ROLE_ASSISTANT}
# The gateway's finish reasons in lm15's vocabulary ("other" has no closer word than stop).
_FINISH_REASONS: Mapping[str, str] = {
    "stop": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "content_filter": "content_filter",
}
# Config fields CompleteRequest carries; any other one set is refused, never dropped.
_CARRIED_CONFIG = {"temperature", "max_tokens", "stop", "response_format"}
# JSON mode without a schema: any JSON object (CompleteRequest asks with a schema).
_ANY_OBJECT_SCHEMA = json.dumps({"type": "object"})
_CONFIG_DEFAULTS = lm15.Config()
# Expected failures as lm15 errors, which DSPy turns into its public LM errors and retries
# when transient (server, timeout, rate limit).
_ERRORS: Mapping[grpc.StatusCode, type[lm15.LM15Error]] = {
    grpc.StatusCode.UNAUTHENTICATED: lm15.AuthError,
    grpc.StatusCode.PERMISSION_DENIED: lm15.AuthError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: lm15.RateLimitError,
    grpc.StatusCode.DEADLINE_EXCEEDED: lm15.TimeoutError,
    grpc.StatusCode.INVALID_ARGUMENT: lm15.InvalidRequestError,
    grpc.StatusCode.FAILED_PRECONDITION: lm15.InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: lm15.InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: lm15.UnsupportedModelError,
    grpc.StatusCode.UNAVAILABLE: lm15.ServerError,
    grpc.StatusCode.INTERNAL: lm15.ServerError,
    grpc.StatusCode.UNKNOWN: lm15.ServerError,
    grpc.StatusCode.DATA_LOSS: lm15.ServerError,
}


class GatewayEngine:
    """A DSPy engine: one canonical ``Request`` becomes one ``Gateway.Complete`` call.

    ``alias`` is the platform's model alias ("mock", "claude_smart", or "provider/model"; empty:
    the gateway's default) and ``preset`` one of its presets (empty: the alias's default).
    The client is borrowed: the engine never closes it.
    """

    # Capability hints DSPy's adapters read (dspy.clients.capabilities): chat text with the
    # settings Complete carries, structured output through its json_schema (so DSPy's
    # JSONAdapter asks the platform for JSON fitting the signature); no tools.
    supports_function_calling = False
    supports_reasoning = False
    supports_response_schema = True
    supported_params = frozenset(_CARRIED_CONFIG)

    def __init__(
        self,
        client: GatewayClient,
        alias: str = "",
        preset: str = "",
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.alias = alias
        self.preset = preset
        self.timeout = timeout
        self.metadata = dict(metadata or {})

    def with_model(self, alias: str, preset: str) -> GatewayEngine:
        """The same engine (client, timeout, metadata) for another alias and preset."""
        return GatewayEngine(
            self.client, alias, preset, timeout=self.timeout, metadata=self.metadata
        )

    def complete_request(self, request: lm15.Request) -> provider_pb2.CompleteRequest:
        """The CompleteRequest for ``request``; what Complete cannot carry is refused by name."""
        if request.tools:
            raise lm15.UnsupportedFeatureError(
                "ElexirionLM cannot send tools: Gateway.Complete has no tool calls",
                feature="tools",
                provider=_PROVIDER,
            )
        config = request.config
        unsupported = sorted(
            name
            for name in type(config).__dataclass_fields__
            if name not in _CARRIED_CONFIG
            and getattr(config, name) != getattr(_CONFIG_DEFAULTS, name)
        )
        if unsupported:
            raise lm15.UnsupportedFeatureError(
                f"ElexirionLM cannot send {', '.join(unsupported)}: Gateway.Complete carries only"
                " temperature, max_tokens, stop and response_format",
                feature=unsupported[0],
                provider=_PROVIDER,
            )
        grpc_request = provider_pb2.CompleteRequest(
            messages=[_chat_message(message) for message in request.messages],
            system=_system_text(request.system),
            model=self.alias,
            preset=self.preset,
            stop_sequences=list(config.stop),
            metadata=self.metadata,
            json_schema=_json_schema(config.response_format),
        )
        if config.temperature is not None:
            grpc_request.temperature = config.temperature
        if config.max_tokens is not None:
            grpc_request.max_tokens = config.max_tokens
        return grpc_request

    def complete(self, request: lm15.Request) -> lm15.Response:
        grpc_request = self.complete_request(request)
        try:
            reply = self.client.send_complete(grpc_request, self.timeout)
        except GatewayError as err:
            raise _lm15_error(err) from err
        return _response(reply, request.model)

    def stream(self, request: lm15.Request) -> Iterator[Any]:
        raise lm15.UnsupportedFeatureError(
            "ElexirionLM does not stream: use it without dspy.streamify",
            feature="stream",
            provider=_PROVIDER,
        )

    def close(self) -> None:
        """Nothing to release: the client is borrowed (ElexirionLM.close closes its own)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> GatewayEngine:
        # DSPy deep-copies programs (and the LMs set on them); an engine is a borrowed
        # connection, shared like dspy.LM shares its provider clients.
        return self


class AsyncGatewayEngine:
    """The async counterpart DSPy's ``acall`` needs: the same call, off the event loop."""

    supports_function_calling = GatewayEngine.supports_function_calling
    supports_reasoning = GatewayEngine.supports_reasoning
    supports_response_schema = GatewayEngine.supports_response_schema
    supported_params = GatewayEngine.supported_params

    def __init__(self, engine: GatewayEngine) -> None:
        self.engine = engine

    async def complete(self, request: lm15.Request) -> lm15.Response:
        # The blocking stub in a worker thread: gRPC's sync channel is thread-safe, and one
        # channel serves both sync and async callers.
        return await asyncio.to_thread(self.engine.complete, request)

    async def stream(self, request: lm15.Request) -> AsyncIterator[Any]:
        self.engine.stream(request)
        yield  # pragma: no cover - stream() always raises

    async def aclose(self) -> None:
        """Nothing to release (see GatewayEngine.close)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> AsyncGatewayEngine:
        return self


class ElexirionLM(dspy.LM):
    """A ``dspy.LM`` whose calls all go through ``Gateway.Complete``.

    ``model`` is a model alias of the platform ("mock", "claude_smart", ...; empty: the
    gateway's default) and ``preset`` one of its presets. ``gateway`` is a
    :class:`GatewayClient` (borrowed) or a target "host:port" (default: env
    ``ELEXIRION_GATEWAY``, else 127.0.0.1:50051) for which the LM opens its own client with
    ``api_key`` (default: env ``ELEXIRION_API_KEY``). ``timeout`` bounds each call in seconds
    (default: the given client's own default, or 120 s for a client the LM opens).

    DSPy's cache is honoured (``cache=False`` turns it off): a repeated request is answered from
    ``dspy.cache`` without calling the gateway. ``n > 1`` makes n gateway calls. Usage goes to
    DSPy's usage tracker; each history entry's ``cost`` is the gateway's cost in USD (a cache
    hit keeps its original cost, as dspy.LM does, and adds no usage). ``num_retries`` (default 1)
    retries transient failures; the platform already retries and falls back per provider.
    """

    def __init__(
        self,
        model: str = "",
        *,
        gateway: GatewayClient | str | None = None,
        api_key: str | None = None,
        preset: str = "",
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        num_retries: int = 1,
        callbacks: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(gateway, GatewayClient):
            client, owned = gateway, False
        else:
            target = gateway or os.environ.get("ELEXIRION_GATEWAY") or DEFAULT_GATEWAY
            key = api_key if api_key is not None else os.environ.get("ELEXIRION_API_KEY")
            client = GatewayClient(
                target, timeout=DEFAULT_TIMEOUT_S if timeout is None else timeout, api_key=key
            )
            owned = True
        engine = GatewayEngine(client, model, preset, timeout=timeout, metadata=metadata)
        super().__init__(
            model=_model_id(model, preset),
            model_type="chat",
            temperature=temperature,
            max_tokens=max_tokens,
            cache=cache,
            callbacks=callbacks,
            num_retries=num_retries,
            engine=engine,
            async_engine=AsyncGatewayEngine(engine),
            **kwargs,
        )
        self.alias = model
        self.preset = preset
        self.gateway = client
        self._owns_gateway = owned

    def copy(self, **kwargs: Any) -> ElexirionLM:
        """A copy (DSPy's rules), sharing the gateway client; ``alias=``/``preset=`` switch model."""
        if "model" in kwargs:
            raise ValueError("ElexirionLM.copy: pass alias=... (a model alias), not model=")
        alias = kwargs.pop("alias", self.alias)
        preset = kwargs.pop("preset", self.preset)
        if (alias, preset) != (self.alias, self.preset):
            engine = self._engine_spec.with_model(alias, preset)
            kwargs.update(
                engine=engine, async_engine=AsyncGatewayEngine(engine), model=_model_id(alias, preset)
            )
        copied: ElexirionLM = super().copy(**kwargs)
        copied.alias, copied.preset = alias, preset
        copied._owns_gateway = False  # the original closes the channel
        return copied

    def __deepcopy__(self, memo: dict[int, Any]) -> ElexirionLM:
        # DSPy deep-copies programs while optimizing; dspy.LM's rule for copies applies (shared
        # connection, own history and settings) instead of failing on the gRPC channel.
        return self.copy()

    def close(self) -> None:
        """Closes the gateway channel when this LM opened it."""
        super().close()
        if self._owns_gateway:
            self.gateway.close()

    def update_history(self, entry: dict[str, Any]) -> None:
        # A custom engine has no DSPy pricing; the gateway says what each call cost.
        if entry.get("cost") is None:
            entry["cost"] = _gateway_cost(entry.get("response"))
        super().update_history(entry)

    def dump_state(self) -> dict[str, Any]:
        """What rebuilds this LM elsewhere: the gateway's address, never the API key."""
        kwargs = {k: v for k, v in self.kwargs.items() if v is not None and k != "api_key"}
        return {
            LM_CLASS_STATE_KEY: f"{type(self).__module__}.{type(self).__qualname__}",
            "model": self.alias,
            "preset": self.preset,
            "gateway": self.gateway.target,
            "timeout": self._engine_spec.timeout,
            "metadata": dict(self._engine_spec.metadata),
            "cache": self.cache,
            "num_retries": self.num_retries,
            **kwargs,
        }

    @classmethod
    def load_state(
        cls, state: dict[str, Any], *, allow_custom_lm_class: bool = False
    ) -> ElexirionLM:
        """Rebuilds a dumped LM; the API key comes from ``ELEXIRION_API_KEY``."""
        state = {k: v for k, v in state.items() if k != LM_CLASS_STATE_KEY}
        return cls(**state)


def _model_id(alias: str, preset: str) -> str:
    """DSPy's model name for an alias and preset: in history, and in the cache key."""
    name = f"elexirion/{alias or '(default)'}"
    return f"{name}@{preset}" if preset else name


def _json_schema(response_format: Mapping[str, Any] | None) -> str:
    """CompleteRequest.json_schema for lm15's canonical response_format ("" for plain text)."""
    if not response_format or response_format.get("type") == "text":
        return ""
    kind = response_format.get("type")
    if kind == "json_object":
        return _ANY_OBJECT_SCHEMA
    if kind == "json_schema" and isinstance(response_format.get("schema"), Mapping):
        return json.dumps(response_format["schema"])
    raise lm15.UnsupportedFeatureError(
        f"ElexirionLM cannot ask for response_format type {kind!r}: Gateway.Complete takes a JSON"
        " Schema (json_schema) or JSON mode (json_object)",
        feature="response_format",
        provider=_PROVIDER,
    )


def _system_text(system: str | tuple[Any, ...] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "".join(_text(part, "the system prompt") for part in system)


def _chat_message(message: lm15.Message) -> common_pb2.ChatMessage:
    role = _ROLES.get(message.role)
    if role is None:
        raise lm15.UnsupportedFeatureError(
            f"ElexirionLM cannot send a {message.role!r} message: Gateway.Complete takes user"
            " and assistant messages and a system text",
            feature=f"role:{message.role}",
            provider=_PROVIDER,
        )
    content = "".join(_text(part, f"a {message.role} message") for part in message.parts)
    return common_pb2.ChatMessage(role=role, content=content)


def _text(part: Any, where: str) -> str:
    if isinstance(part, lm15.TextPart):
        return part.text
    raise lm15.UnsupportedFeatureError(
        f"ElexirionLM sends text only; {where} holds a {part.type} part",
        feature=part.type,
        provider=_PROVIDER,
    )


def _response(reply: provider_pb2.CompleteResponse, requested_model: str) -> lm15.Response:
    served = f"{reply.provider}/{reply.model}" if reply.provider and reply.model else ""
    usage = (
        lm15.Usage(input_tokens=reply.usage.input_tokens, output_tokens=reply.usage.output_tokens)
        if reply.HasField("usage")
        else lm15.Usage()
    )
    return lm15.Response(
        id=None,
        model=served or reply.model or requested_model,
        # With a schema the gateway parses and validates the answer: its JSON when valid, else
        # the model's text, for DSPy's adapter to report what did not parse.
        message=lm15.Message.assistant(reply.json or reply.text),
        finish_reason=_FINISH_REASONS.get(reply.finish_reason, "stop"),
        usage=usage,
        provider_data={
            PROVIDER_DATA_KEY: {
                "cost_usd": reply.usage.cost_usd,
                "provider": reply.provider,
                "model": reply.model,
                "alias": reply.alias,
                "attempts": reply.attempts,
                "latency_ms": reply.latency_ms,
                "fallback_used": reply.fallback_used,
                "failed_targets": list(reply.failed_targets),
                "finish_reason": reply.finish_reason,
                "json_error": reply.json_error,
            }
        },
    )


def _gateway_cost(response: Any) -> float | None:
    """The gateway's cost of a history entry's response(s); None when it did not say."""
    responses = response if isinstance(response, tuple) else (response,)
    costs = [
        (r.provider_data or {}).get(PROVIDER_DATA_KEY, {}).get("cost_usd")
        for r in responses
        if isinstance(r, lm15.Response)
    ]
    if not costs or any(cost is None for cost in costs):
        return None
    return float(sum(costs))


def _lm15_error(err: GatewayError) -> lm15.LM15Error:
    error_class = _ERRORS.get(err.code, lm15.ProviderError)
    kwargs: dict[str, Any] = {"provider": _PROVIDER, "provider_code": err.code.name}
    if error_class is lm15.AuthError:
        # lm15's default advice names its own key settings; say how this LM gets its key.
        kwargs["credential_hint"] = (
            "pass api_key= to ElexirionLM (or set ELEXIRION_API_KEY) with a key holding the"
            " 'chat' scope"
        )
    return error_class(str(err), **kwargs)
