"""What the hook reads from its connection (hooks/settings.py): size extras checked and named, prices."""

from __future__ import annotations

import httpx
import pytest

from airflow_agentchat.exceptions import AgentChatError
from airflow_agentchat.hooks.agent_chat import AgentChatHook
from airflow_agentchat.hooks.retry import RetryPolicy


class Recorder:
    """A handler that answers from a list and keeps every request it saw."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0)


def hook_with(make_conn, handler, **kwargs) -> tuple[AgentChatHook, list[float]]:
    delays: list[float] = []

    async def asleep(seconds: float) -> None:
        delays.append(seconds)

    extra = kwargs.pop("extra", {})
    hook = AgentChatHook(
        make_conn("mocked", "https://agent.example.com", **extra),
        transport=httpx.MockTransport(handler),
        retry_policy=RetryPolicy(max_retries=kwargs.pop("max_retries", 2), jitter=lambda: 1.0),
        sleep=delays.append,
        async_sleep=asleep,
        **kwargs,
    )
    hook._pause.remaining = lambda: 0.0  # type: ignore[method-assign]
    return hook, delays


def test_prices_come_with_the_settings(make_conn):
    hook, _ = hook_with(make_conn, Recorder(), extra={"prompt_token_price": 0.3, "completion_token_price": "1.2"})
    assert hook.settings.prices.known and hook.settings.prices.cost({"prompt_tokens": 10**6}) == 0.3


def test_size_extras_are_checked_and_named(make_conn):
    hook = AgentChatHook(make_conn("bad_cap", "http://127.0.0.1:1", max_response_bytes="lots"))
    with pytest.raises(AgentChatError, match="'max_response_bytes' must be a positive number"):
        hook.settings  # noqa: B018
