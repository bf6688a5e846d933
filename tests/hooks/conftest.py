"""Fixtures of the hook's tests: a hook on the scripted server whose sleeps are recorded, and a hostile server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hostile_server import HostileServer

from airflow_agentchat.hooks.agent_chat import AgentChatHook
from airflow_agentchat.hooks.retry import RetryPolicy


class Sleeps:
    """Records the delays the hook asks for instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(round(seconds, 3))

    async def asleep(self, seconds: float) -> None:
        self.delays.append(round(seconds, 3))


@pytest.fixture()
def hook_for(scripted, make_conn):
    created: list[AgentChatHook] = []

    def make(**kwargs) -> tuple[AgentChatHook, Sleeps]:
        conn_id = make_conn("scripted", scripted.url, **kwargs.pop("extra", {}))
        sleeps = Sleeps()
        hook = AgentChatHook(
            conn_id,
            retry_policy=RetryPolicy(max_retries=kwargs.pop("max_retries", 3), jitter=lambda: 1.0),
            sleep=sleeps,
            async_sleep=sleeps.asleep,
            **kwargs,
        )
        # A 429 pauses the whole hook in real time; the recorded sleeps stand in for it here.
        hook._pause.remaining = lambda: 0.0  # type: ignore[method-assign]
        created.append(hook)
        return hook, sleeps

    yield make
    for hook in created:
        hook.close()


@pytest.fixture()
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.close()
