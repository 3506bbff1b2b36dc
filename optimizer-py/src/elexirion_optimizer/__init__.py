"""Elexirion's prompt optimizer (Python side of the platform).

For now this holds the typed gRPC client for the public gateway; the protobuf/gRPC stubs it uses
are generated into ``elexirion_optimizer.generated`` by ``scripts/setup-python.sh``.
"""

from elexirion_optimizer.client import GatewayClient, GatewayError

__all__ = ["GatewayClient", "GatewayError"]
