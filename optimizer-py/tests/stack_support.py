"""The real platform for end-to-end tests: a nats-server with JetStream and every service (the
monitor included) in one Node process, keys on, each on a free loopback port; both stopped at the
end. Shared by the lifecycle and optimize end-to-end tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from test_e2e import ADMIN_KEY, MAIN_JS, REPO_ROOT, ServicesHost

from elexirion_optimizer import GatewayClient, GatewayError

NATS_READY_TIMEOUT_S = 20.0
REGISTRY_TIMEOUT_S = 20.0
SERVICES = ("GATEWAY", "AGENT", "EXECUTOR", "PROVIDER", "MONITOR")


class NatsServer:
    """A real nats-server with JetStream on a loopback port and a temporary store."""

    def __init__(self, store: Path, port: int, log_path: Path) -> None:
        self.url = f"nats://127.0.0.1:{port}"
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        """Waits for the server's own "Server is ready" (a port that answers could be another's)."""
        deadline = time.monotonic() + NATS_READY_TIMEOUT_S
        while "Server is ready" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nats-server did not start:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


@contextmanager
def running_platform(
    tmp_path: Path, free_port: Callable[[], int], extra_env: Mapping[str, str] = {}
) -> Iterator[ServicesHost]:
    """Starts nats-server and all services (every gRPC and HTTP port a free one, so nothing
    collides with a stack already running here), waits until the gateway serves, and stops both
    when the block ends."""
    if shutil.which("nats-server") is None:
        pytest.fail("nats-server not found (Debian: apt-get install nats-server)")
    if not MAIN_JS.is_file():
        pytest.fail(f"{MAIN_JS} does not exist: build the services first (npm run build)")
    node = os.environ.get("ELEXIRION_NODE") or shutil.which("node")
    if not node:
        pytest.fail("node not found: set ELEXIRION_NODE or put Node 24 on PATH")
    ports: set[int] = set()
    while len(ports) < 1 + 2 * len(SERVICES):
        ports.add(free_port())
    nats_port, *service_ports = sorted(ports)
    store = tmp_path / "jetstream"
    store.mkdir()
    nats = NatsServer(store, nats_port, tmp_path / "nats.log")
    host: ServicesHost | None = None
    try:
        nats.wait_ready()
        env = {
            **os.environ,
            "ELEXIRION_SERVICES": "all",
            "BIND_HOST": "127.0.0.1",
            "NATS_URL": nats.url,
            "GATEWAY_AUTH": "on",
            "GATEWAY_ADMIN_KEY": ADMIN_KEY,
            **extra_env,
        }
        for index, service in enumerate(SERVICES):
            env[f"{service}_GRPC_PORT"] = str(service_ports[2 * index])
            env[f"{service}_HTTP_PORT"] = str(service_ports[2 * index + 1])
        log_path = tmp_path / "services.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [node, str(MAIN_JS), "--services", "all"],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        host = ServicesHost(process, log_path, int(env["GATEWAY_GRPC_PORT"]))
        host.wait_serving()
        yield host
    finally:
        if host is not None:
            host.stop()
        nats.stop()


def wait_for_the_registry(gateway: GatewayClient, pipeline: str) -> None:
    """The gateway serves before the executor's registry has read NATS (it answers UNAVAILABLE
    until then); a publish must not meet that window."""
    deadline = time.monotonic() + REGISTRY_TIMEOUT_S
    while True:
        try:
            gateway.list_prompt_versions(pipeline)
            return
        except GatewayError as err:
            if err.code is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        time.sleep(0.2)
