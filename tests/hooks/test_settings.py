"""What the hook reads from its connection (hooks/settings.py): size extras checked and named, prices."""

from __future__ import annotations

import pytest

from airflow_agentchat.exceptions import AgentChatError
from airflow_agentchat.hooks.agent_chat import AgentChatHook


def test_prices_come_with_the_settings(make_conn):
    extra = {"prompt_token_price": 0.3, "completion_token_price": "1.2"}
    hook = AgentChatHook(make_conn("priced", "https://agent.example.com", **extra))
    assert hook.settings.prices.known and hook.settings.prices.cost({"prompt_tokens": 10**6}) == 0.3
    assert hook.settings.prices.cost({"completion_tokens": 10**6}) == 1.2


def test_size_extras_are_checked_and_named(make_conn):
    hook = AgentChatHook(make_conn("bad_cap", "http://127.0.0.1:1", max_response_bytes="lots"))
    with pytest.raises(AgentChatError, match="'max_response_bytes' must be a positive number"):
        hook.settings  # noqa: B018
