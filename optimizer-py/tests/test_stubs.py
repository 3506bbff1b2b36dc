"""The generated stubs import and their messages round-trip through the wire format."""

import importlib
import pkgutil

from elexirion_optimizer.generated.elexirion import v1
from elexirion_optimizer.generated.elexirion.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc


def test_every_generated_module_imports() -> None:
    names = [m.name for m in pkgutil.iter_modules(v1.__path__)]
    assert "gateway_pb2" in names and "gateway_pb2_grpc" in names
    for name in names:
        importlib.import_module(f"{v1.__name__}.{name}")


def test_chat_request_round_trips() -> None:
    request = gateway_pb2.ChatRequest(message="hello", session_id="s-1", pipeline="general")
    data = request.SerializeToString()
    assert gateway_pb2.ChatRequest.FromString(data) == request
    assert gateway_pb2.ChatRequest.FromString(data).message == "hello"


def test_names_match_the_proto_contract() -> None:
    # Descriptor names are what other services see (reflection, Any, errors): they must not carry
    # the Python package prefix the imports were rewritten to.
    assert gateway_pb2.DESCRIPTOR.name == "elexirion/v1/gateway.proto"
    assert gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name == "elexirion.v1.Gateway"
    assert gateway_pb2.ChatResponse.DESCRIPTOR.fields_by_name["usage"].message_type is (
        common_pb2.Usage.DESCRIPTOR
    )
    assert hasattr(gateway_pb2_grpc, "GatewayStub")
