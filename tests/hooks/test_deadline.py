"""The attempt deadline (hooks/deadline.py) against a hostile server of the test's own (a raw socket on
127.0.0.1): a trickling server ends at the deadline on all four paths, and the default deadline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hostile_server import head, run

from airflow_agentchat.exceptions import NetworkTimeoutError
from airflow_agentchat.hooks.agent_chat import AgentChatHook

USER = [{"role": "user", "content": "hello"}]


ALL_PATHS = ["sync", "async", "stream", "astream"]


# ------------------------------------------------------------------------------------------ deadline


def trickle(prefix: bytes, every: float, count: int = 1000) -> Iterator[bytes | float]:
    """``prefix`` at once, then one byte at a time, ``every`` seconds apart (each read well inside the timeout)."""
    yield prefix
    for _ in range(count):
        yield every
        yield b"a"


TRICKLES = {
    "headers": lambda: trickle(b"HTTP/1.1 200 OK\r\nX-Slow: ", 0.3),
    "body": lambda: trickle(head(Content_Length="100000") + b'{"id": "x", ', 0.3),
    "stream": lambda: trickle(head("text/event-stream") + b": keep-alive\n", 0.3),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ALL_PATHS)
@pytest.mark.parametrize("where", list(TRICKLES))
def test_a_trickling_server_ends_at_the_attempt_deadline(hostile, make_conn, mode, where):
    hostile.script = TRICKLES[where]
    hook = AgentChatHook(make_conn("slow", hostile.url, attempt_deadline=1.5), timeout=1.0, max_retries=0)
    error = run(hook, mode)
    assert isinstance(error, NetworkTimeoutError), error
    assert "deadline of 1.5 s" in str(error) and "attempt_deadline" in str(error) and error.retryable


def test_the_deadline_defaults_to_four_read_timeouts(make_conn):
    hook = AgentChatHook(make_conn("derived", "http://127.0.0.1:1"), timeout=7)
    assert hook.settings.deadline == 28
    hook = AgentChatHook(make_conn("given", "http://127.0.0.1:1", attempt_deadline="90"), timeout=7)
    assert hook.settings.deadline == 90
