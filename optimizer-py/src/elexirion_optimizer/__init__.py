"""Elexirion's prompt optimizer (Python side of the platform).

The typed gRPC client for the public gateway, ``ElexirionLM`` (DSPy's LM over
``Gateway.Complete``) and the CLI (``python -m elexirion_optimizer``). The protobuf/gRPC stubs
are generated into ``elexirion_optimizer.generated``.
"""

from typing import Any

from elexirion_optimizer.client import GatewayClient, GatewayError

__all__ = ["ElexirionLM", "GatewayClient", "GatewayError"]


def __getattr__(name: str) -> Any:
    # ElexirionLM imports dspy (seconds): only when asked for, so the client and the lifecycle
    # commands start fast.
    if name == "ElexirionLM":
        from elexirion_optimizer.lm import ElexirionLM

        return ElexirionLM
    raise AttributeError(f"module 'elexirion_optimizer' has no attribute {name!r}")
