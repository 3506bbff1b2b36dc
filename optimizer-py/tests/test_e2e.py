"""End to end: the real TypeScript services in one Node process, called through GatewayClient.

Needs the built all-in-one host (`npm run build` -> server/dist/main.js) and Node 24, taken from
ELEXIRION_NODE or PATH. NATS_URL points at a port nothing listens on: the services run without it.
"""

from __future__ import annotations

import os
import shutil
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from elexirion_optimizer import GatewayClient, GatewayError

REPO_ROOT = Path(__file__).resolve().parents[2]
MAIN_JS = REPO_ROOT / "server" / "dist" / "main.js"
GATEWAY_SERVICE = "elexirion.v1.Gateway"
ADMIN_KEY = secrets.token_urlsafe(32)
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
# Retry connecting quickly while Node starts (the default backoff grows to many seconds).
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]

pytestmark = pytest.mark.e2e


class ServicesHost:
    """One `node server/dist/main.js` process hosting gateway, agent, executor and provider."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, grpc_port: int) -> None:
        self.process = process
        self.log_path = log_path
        self.target = f"127.0.0.1:{grpc_port}"

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[-chars:] if text else "(no output)"

    def wait_serving(self) -> None:
        """Polls grpc.health.v1 until the gateway reports SERVING; fails after START_TIMEOUT_S."""
        deadline = time.monotonic() + START_TIMEOUT_S
        last = "no answer yet"
        request = health_pb2.HealthCheckRequest(service=GATEWAY_SERVICE)
        with grpc.insecure_channel(self.target, options=FAST_RECONNECT) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    pytest.fail(
                        f"services exited with code {self.process.returncode} before serving;"
                        f" output:\n{self.log_tail()}"
                    )
                try:
                    status = health.Check(request, timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                except grpc.RpcError as err:
                    last = str(GatewayError.from_rpc_error(err))
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"{GATEWAY_SERVICE} on {self.target} not SERVING after"
                        f" {START_TIMEOUT_S:.0f} s (last health answer: {last});"
                        f" output:\n{self.log_tail()}"
                    )
                time.sleep(0.2)

    def stop(self) -> bool:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; True when it exited without the kill.

        The process runs in its own session: whatever it left behind in that process group
        (children, if any) is killed too.
        """
        graceful = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                graceful = False
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        return graceful


@pytest.fixture
def start_services(
    tmp_path: Path, free_port: Callable[[], int]
) -> Iterator[Callable[[], ServicesHost]]:
    """Gives a function that starts the services; whatever it started is stopped at teardown.

    Starting happens inside the test (not in fixture setup) so that a missing build is reported as
    a test failure, not a setup error.
    """
    hosts: list[ServicesHost] = []

    def start() -> ServicesHost:
        if not MAIN_JS.is_file():
            pytest.fail(
                f"{MAIN_JS} does not exist: build the TypeScript services first (npm run build)"
            )
        node = os.environ.get("ELEXIRION_NODE") or shutil.which("node")
        if not node:
            pytest.fail("node not found: set ELEXIRION_NODE or put Node 24 on PATH")
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        grpc_port, http_port, nats_port = ports
        env = {
            **os.environ,
            "ELEXIRION_SERVICES": "gateway,agent,executor,provider",
            "BIND_HOST": "127.0.0.1",
            "GATEWAY_GRPC_PORT": str(grpc_port),
            "GATEWAY_HTTP_PORT": str(http_port),
            "NATS_URL": f"nats://127.0.0.1:{nats_port}",
            # Keys on, as in production: the client sends the bootstrap admin key.
            "GATEWAY_AUTH": "on",
            "GATEWAY_ADMIN_KEY": ADMIN_KEY,
        }
        log_path = tmp_path / "services.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [node, str(MAIN_JS)],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        host = ServicesHost(process, log_path, grpc_port)
        hosts.append(host)
        return host

    try:
        yield start
    finally:
        for host in hosts:
            host.stop()


def test_chat_through_the_real_services(start_services: Callable[[], ServicesHost]) -> None:
    host = start_services()
    host.wait_serving()

    with GatewayClient(host.target, timeout=15) as keyless:
        with pytest.raises(GatewayError) as refused:
            keyless.chat("hello")
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED, refused.value

    with GatewayClient(host.target, timeout=15, api_key=ADMIN_KEY) as client:
        reply = client.chat("hello")

    assert reply.pipeline_used, f"empty pipeline_used in {reply}"
    assert reply.response, f"empty response in {reply}"
    assert host.stop(), (
        f"services did not exit within {STOP_TIMEOUT_S:.0f} s of SIGTERM;"
        f" output:\n{host.log_tail()}"
    )
