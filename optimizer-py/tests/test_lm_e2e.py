"""End to end: ElexirionLM through the real gateway and provider (the offline mock), started as
tests/test_e2e.py starts them (one Node process, keys on)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import dspy
import pytest
from dspy.clients.cache import Cache
from dspy.utils.exceptions import LMAuthError, LMUnsupportedModelError
from dspy.utils.usage_tracker import track_usage
from test_e2e import ADMIN_KEY, ServicesHost, start_services  # noqa: F401 (fixture)

from elexirion_optimizer import ElexirionLM

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def isolated_dspy_cache() -> Iterator[None]:
    saved = dspy.cache
    dspy.cache = Cache(enable_disk_cache=False, enable_memory_cache=True, disk_cache_dir=None)
    try:
        yield
    finally:
        dspy.cache = saved


def test_elexirion_lm_through_the_real_gateway(
    start_services: Callable[[], ServicesHost],
) -> None:
    host = start_services()
    host.wait_serving()
    lm = ElexirionLM("mock", gateway=host.target, api_key=ADMIN_KEY, timeout=15, num_retries=0)
    try:
        # The mock's pattern table answers "ping" with "pong"; the nonce keeps the prompt new.
        prompt = f"ping {uuid.uuid4().hex}"
        with track_usage() as tracker:
            first = lm(prompt, temperature=0.0, max_tokens=64)
            again = lm(prompt, temperature=0.0, max_tokens=64)
        assert first == ["pong"], lm.history[-1]
        assert again == first

        served, cached = lm.history[-2], lm.history[-1]
        assert served["response_model"] == "mock/mock"
        assert served["usage"]["prompt_tokens"] > 0 and served["usage"]["completion_tokens"] > 0
        assert served["cost"] == 0.0  # the mock's price, as the gateway reports it
        assert cached["usage"] == {}  # answered by DSPy's cache: no second gateway call
        totals = tracker.get_total_tokens()[lm.model]
        assert totals["prompt_tokens"] == served["usage"]["prompt_tokens"]

        # A whole DSPy module: JSONAdapter asks the platform for JSON fitting the signature, and
        # the mock answers with JSON that fits it.
        with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            prediction = dspy.Predict("question -> answer: str, confidence: float")(
                question=f"what is elexirion? {uuid.uuid4().hex}"
            )
        assert isinstance(prediction.answer, str) and isinstance(prediction.confidence, float)
        assert lm.history[-1]["response"].provider_data["elexirion"]["json_error"] == ""

        with pytest.raises(LMUnsupportedModelError) as unknown:
            lm.copy(alias="no_such_alias")(f"hello {uuid.uuid4().hex}")
        assert "no_such_alias" in str(unknown.value)
    finally:
        lm.close()

    wrong_key = ElexirionLM("mock", gateway=host.target, api_key="elx_nope_wrong", num_retries=0)
    try:
        with pytest.raises(LMAuthError) as refused:
            wrong_key(f"hello {uuid.uuid4().hex}")
        assert f"the gateway at {host.target} refused the API key" in str(refused.value)
        assert "elx_nope_wrong" not in str(refused.value)
    finally:
        wrong_key.close()
    assert host.stop(), f"services did not stop on SIGTERM; output:\n{host.log_tail()}"
