"""Typed, blocking client for Elexirion's public gRPC API (``elexirion.v1.Gateway``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

try:
    from elexirion_optimizer.generated.elexirion.v1 import (
        common_pb2,
        executor_pb2,
        gateway_pb2,
        gateway_pb2_grpc,
        monitor_pb2,
        options_pb2,
        prompts_pb2,
        provider_pb2,
    )
except ModuleNotFoundError as err:  # pragma: no cover - only without generated stubs
    raise ImportError(
        "elexirion_optimizer's gRPC stubs are not generated: run scripts/setup-python.sh"
    ) from err

__all__ = ["GatewayClient", "GatewayError", "required_scope"]

_GATEWAY_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
# How long the reachability probe after an UNAVAILABLE answer may take.
_REACH_PROBE_TIMEOUT_S = 2.0

#: ChatMessage roles by the names DSPy and OpenAI use.
ROLES: Mapping[str, int] = {
    "user": common_pb2.ROLE_USER,
    "assistant": common_pb2.ROLE_ASSISTANT,
    "system": common_pb2.ROLE_SYSTEM,
}


def required_scope(method: str) -> str:
    """The API key scope a Gateway call needs, read from the proto's ``required_scope`` option."""
    options = _GATEWAY_SERVICE.methods_by_name[method].GetOptions()
    scope: str = options.Extensions[options_pb2.required_scope]
    return scope


class GatewayError(Exception):
    """A gateway call failed: the gRPC status ``code``, the server's ``details`` and the call.

    ``str(error)`` is one line meant for people: the status name and what went wrong, saying
    which gateway could not be reached or which scope a key lacks when that is the cause.
    ``unreachable`` is True when the call never reached the gateway (no connection).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        *,
        method: str = "",
        message: str = "",
        unreachable: bool = False,
    ) -> None:
        super().__init__(f"{code.name}: {message or details}")
        self.code = code
        self.details = details
        self.method = method
        self.unreachable = unreachable

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
    Use as a context manager, or call :meth:`close`, to close the channel. A client may be shared
    by threads (gRPC channels are thread-safe).
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
        self._has_key = bool(api_key)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._channel = grpc.insecure_channel(target, options=list(options))
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        # grpc.health.v1 Check with an empty request (service "": the server as a whole), as raw
        # bytes: it tells "no connection" from the gateway's own UNAVAILABLE answer.
        self._health_check = self._channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=_raw_bytes,
            response_deserializer=_raw_bytes,
        )

    # --- Chat, pipelines, models -------------------------------------------------------------

    def chat(
        self,
        message: str,
        session_id: str = "",
        pipeline: str = "",
        timeout: float | None = None,
    ) -> gateway_pb2.ChatResponse:
        """Answers ``message``; ``pipeline`` forces a pipeline instead of the agent's routing."""
        request = gateway_pb2.ChatRequest(message=message, session_id=session_id, pipeline=pipeline)
        return self._call("Chat", request, timeout)

    def complete(
        self,
        messages: Sequence[common_pb2.ChatMessage | tuple[str, str]],
        *,
        system: str = "",
        model: str = "",
        preset: str = "",
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        json_schema: str = "",
        timeout: float | None = None,
    ) -> provider_pb2.CompleteResponse:
        """One LLM call through the platform: ``model`` is an alias (or ``provider/model``).

        ``messages`` are ChatMessages or ``(role, content)`` pairs with role ``user``,
        ``assistant`` or ``system``.
        """
        request = provider_pb2.CompleteRequest(
            messages=[_chat_message(m) for m in messages],
            system=system,
            model=model,
            preset=preset,
            stop_sequences=list(stop),
            metadata=dict(metadata or {}),
            json_schema=json_schema,
        )
        if temperature is not None:
            request.temperature = temperature
        if max_tokens is not None:
            request.max_tokens = max_tokens
        return self.send_complete(request, timeout)

    def send_complete(
        self, request: provider_pb2.CompleteRequest, timeout: float | None = None
    ) -> provider_pb2.CompleteResponse:
        """Complete with a CompleteRequest built by the caller (ElexirionLM builds its own)."""
        return self._call("Complete", request, timeout)

    def list_pipelines(self, timeout: float | None = None) -> executor_pb2.ListPipelinesResponse:
        """The pipelines with their inputs and whether each is valid."""
        return self._call("ListPipelines", executor_pb2.ListPipelinesRequest(), timeout)

    def get_pipeline(
        self, pipeline: str, timeout: float | None = None
    ) -> executor_pb2.GetPipelineResponse:
        """One pipeline's YAML source and each LLM step's model and preset."""
        return self._call("GetPipeline", executor_pb2.GetPipelineRequest(pipeline=pipeline), timeout)

    def execute_pipeline(
        self,
        pipeline: str,
        inputs: Mapping[str, str],
        timeout: float | None = None,
        *,
        prompt_overrides: Mapping[str, str] | None = None,
        prompt_candidates: Mapping[str, prompts_pb2.PromptTemplate] | None = None,
        session_id: str = "",
    ) -> gateway_pb2.ExecutePipelineResponse:
        """Runs the pipeline named ``pipeline`` with string ``inputs``.

        ``prompt_overrides`` replace steps' prompt text for this run; ``prompt_candidates`` give
        steps a whole prompt (template, system, demos), reported as version "candidate";
        ``session_id`` keeps prompt-version selection sticky.
        """
        request = gateway_pb2.ExecutePipelineRequest(
            pipeline=pipeline,
            inputs=dict(inputs),
            prompt_overrides=dict(prompt_overrides or {}),
            session_id=session_id,
        )
        for step, template in (prompt_candidates or {}).items():
            request.prompt_candidates[step].CopyFrom(template)
        return self._call("ExecutePipeline", request, timeout)

    # --- Executions and feedback (the monitor, through the gateway) ------------------------

    def list_executions(
        self,
        pipeline: str = "",
        *,
        status: str = "",
        prompt_version: str = "",
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        min_score: float | None = None,
        score_name: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> monitor_pb2.ListExecutionsResponse:
        """One page of completed runs with their feedback, newest first (see iter_executions)."""
        request = monitor_pb2.ListExecutionsRequest(
            pipeline=pipeline,
            status=status,
            prompt_version=prompt_version,
            start_time=_timestamp(start_time),
            end_time=_timestamp(end_time),
            score_name=score_name,
            page_size=page_size,
            page_token=page_token,
        )
        if min_score is not None:
            request.min_score = min_score
        return self._call("ListExecutions", request, timeout)

    def iter_executions(
        self, pipeline: str = "", *, limit: int | None = None, **filters: Any
    ) -> Iterator[monitor_pb2.Execution]:
        """Every run matching ``filters`` (list_executions' arguments), page after page.

        Stops after ``limit`` runs when given. Each page is one call with the client's timeout.
        """
        if limit is not None and limit <= 0:
            return
        token = ""
        yielded = 0
        while True:
            page = self.list_executions(pipeline, page_token=token, **filters)
            for execution in page.executions:
                yield execution
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
            token = page.next_page_token
            if not token:
                return

    def record_feedback(
        self,
        run_id: str,
        name: str,
        *,
        score: float | None = None,
        label: str = "",
        comment: str = "",
        source: int = monitor_pb2.FEEDBACK_SOURCE_CODE,
        timeout: float | None = None,
    ) -> monitor_pb2.RecordFeedbackResponse:
        """Records the named score (or label) on a run; the same name again replaces it."""
        feedback = monitor_pb2.Feedback(name=name, label=label, comment=comment, source=source)
        if score is not None:
            feedback.score = score
        request = monitor_pb2.RecordFeedbackRequest(run_id=run_id, feedback=feedback)
        return self._call("RecordFeedback", request, timeout)

    def get_prompt_version_stats(
        self,
        pipeline: str,
        step: str = "",
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        score_name: str = "",
        timeout: float | None = None,
    ) -> monitor_pb2.GetPromptVersionStatsResponse:
        """Each prompt version's figures and every candidate compared with its baseline."""
        request = monitor_pb2.GetPromptVersionStatsRequest(
            pipeline=pipeline,
            step=step,
            start_time=_timestamp(start_time),
            end_time=_timestamp(end_time),
            score_name=score_name,
        )
        return self._call("GetPromptVersionStats", request, timeout)

    # --- Prompt lifecycle (the executor's registry, through the gateway) -------------------

    def list_prompt_versions(
        self, pipeline: str = "", step: str = "", timeout: float | None = None
    ) -> prompts_pb2.ListPromptVersionsResponse:
        """Each step's versions, rollout, guard and revision (every pipeline when empty)."""
        request = prompts_pb2.ListPromptVersionsRequest(pipeline=pipeline, step=step)
        return self._call("ListPromptVersions", request, timeout)

    def publish_prompt_version(
        self,
        pipeline: str,
        step: str,
        template: prompts_pb2.PromptTemplate,
        *,
        version_id: str = "",
        source: str = "",
        description: str = "",
        scores: Mapping[str, float] | None = None,
        rollout_weight: float = 0.0,
        guard: prompts_pb2.PromptRolloutGuard | None = None,
        reason: str = "",
        expected_revision: int = 0,
        timeout: float | None = None,
    ) -> prompts_pb2.PublishPromptVersionResponse:
        """Publishes an immutable version; with ``rollout_weight`` also starts a (guarded) rollout."""
        request = prompts_pb2.PublishPromptVersionRequest(
            pipeline=pipeline,
            step=step,
            version_id=version_id,
            template=template,
            source=source,
            description=description,
            scores=dict(scores or {}),
            rollout_weight=rollout_weight,
            guard=guard,
            reason=reason,
            expected_revision=expected_revision,
        )
        return self._call("PublishPromptVersion", request, timeout)

    def set_prompt_rollout(
        self,
        pipeline: str,
        step: str,
        weights: Mapping[str, float],
        *,
        candidate: str = "",
        guard: prompts_pb2.PromptRolloutGuard | None = None,
        baseline_protected: bool | None = None,
        reason: str = "",
        expected_revision: int = 0,
        timeout: float | None = None,
    ) -> prompts_pb2.SetPromptRolloutResponse:
        """Sets each version's share of runs and, with ``guard``, the candidate it watches."""
        request = prompts_pb2.SetPromptRolloutRequest(
            pipeline=pipeline,
            step=step,
            weights=dict(weights),
            candidate=candidate,
            guard=guard,
            reason=reason,
            expected_revision=expected_revision,
        )
        if baseline_protected is not None:
            request.baseline_protected = baseline_protected
        return self._call("SetPromptRollout", request, timeout)

    def promote_prompt_version(
        self,
        pipeline: str,
        step: str,
        version_id: str,
        *,
        reason: str = "",
        expected_revision: int = 0,
        timeout: float | None = None,
    ) -> prompts_pb2.PromotePromptVersionResponse:
        """Makes ``version_id`` the baseline, serving every run."""
        request = prompts_pb2.PromotePromptVersionRequest(
            pipeline=pipeline,
            step=step,
            version_id=version_id,
            reason=reason,
            expected_revision=expected_revision,
        )
        return self._call("PromotePromptVersion", request, timeout)

    def rollback_prompt(
        self,
        pipeline: str,
        step: str,
        *,
        to_version: str = "",
        reason: str = "",
        expected_revision: int = 0,
        timeout: float | None = None,
    ) -> prompts_pb2.RollbackPromptResponse:
        """Ends the rollout (every run on the baseline), or makes ``to_version`` the baseline."""
        request = prompts_pb2.RollbackPromptRequest(
            pipeline=pipeline,
            step=step,
            to_version=to_version,
            reason=reason,
            expected_revision=expected_revision,
        )
        return self._call("RollbackPrompt", request, timeout)

    def get_prompt_history(
        self,
        pipeline: str,
        step: str = "",
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> prompts_pb2.GetPromptHistoryResponse:
        """One page of a pipeline's prompt changes, newest first: who, when, what, why."""
        request = prompts_pb2.GetPromptHistoryRequest(
            pipeline=pipeline, step=step, page_size=page_size, page_token=page_token
        )
        return self._call("GetPromptHistory", request, timeout)

    def iter_prompt_history(
        self, pipeline: str, step: str = "", *, limit: int | None = None, page_size: int = 0
    ) -> Iterator[prompts_pb2.PromptChange]:
        """Every change (newest first), page after page; at most ``limit`` when given."""
        if limit is not None and limit <= 0:
            return
        token = ""
        yielded = 0
        while True:
            page = self.get_prompt_history(
                pipeline, step, page_size=page_size, page_token=token
            )
            for change in page.changes:
                yield change
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
            token = page.next_page_token
            if not token:
                return

    # --- Plumbing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        # A client is a connection: DSPy deep-copies programs (and whatever they hold) while
        # optimizing, and every copy should keep talking over this one channel.
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

    def _call(self, method: str, request: Message, timeout: float | None) -> Any:
        """Calls ``method`` on the gateway; a failure becomes a GatewayError saying what to do."""
        try:
            return getattr(self._stub, method)(
                request, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise self._error(method, GatewayError.from_rpc_error(err)) from err

    def _error(self, method: str, error: GatewayError) -> GatewayError:
        code, details = error.code, error.details
        message = ""
        unreachable = code is grpc.StatusCode.UNAVAILABLE and not self._reached()
        if unreachable:
            message = f"cannot reach the gateway at {self.target} (is it running?): {details}"
        elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"{method} got no answer from the gateway at {self.target} in time: {details}"
        elif code is grpc.StatusCode.UNAUTHENTICATED:
            said = "refused the API key" if self._has_key else "needs an API key (none was sent)"
            message = f"the gateway at {self.target} {said}: {details}"
        elif code is grpc.StatusCode.PERMISSION_DENIED:
            scope = required_scope(method)
            message = f"{method} needs an API key with the {scope!r} scope: {details}"
        return GatewayError(
            code, details, method=method, message=message, unreachable=unreachable
        )

    def _reached(self) -> bool:
        """Whether the gateway answers at all (any status but UNAVAILABLE), asked once, briefly."""
        try:
            self._health_check(b"", timeout=_REACH_PROBE_TIMEOUT_S, metadata=self._metadata)
        except grpc.RpcError as err:
            return not (isinstance(err, grpc.Call) and err.code() is grpc.StatusCode.UNAVAILABLE)
        return True


def _raw_bytes(data: bytes) -> bytes:
    return data


def _chat_message(message: common_pb2.ChatMessage | tuple[str, str]) -> common_pb2.ChatMessage:
    if isinstance(message, common_pb2.ChatMessage):
        return message
    role, content = message
    if role not in ROLES:
        raise ValueError(f"message role must be one of {sorted(ROLES)}, got {role!r}")
    return common_pb2.ChatMessage(role=ROLES[role], content=content)


def _timestamp(when: datetime | None) -> timestamp_pb2.Timestamp | None:
    if when is None:
        return None
    if when.tzinfo is None:
        raise ValueError(f"times must be timezone-aware (got {when.isoformat()})")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp
