"""How much of the API server the Agent Chat page may hold (plugins/limits.py): limits from config, chat slots per
user."""

from __future__ import annotations

import pytest


def test_page_limits_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_agentchat.plugins.limits import PageLimits

    monkeypatch.delenv("AIRFLOW__AGENTCHAT__PAGE_CHATS_PER_USER", raising=False)
    monkeypatch.delenv("AIRFLOW__AGENTCHAT__PAGE_CHAT_TIMEOUT", raising=False)
    assert PageLimits.from_config() == PageLimits(4, 300.0)
    monkeypatch.setenv("AIRFLOW__AGENTCHAT__PAGE_CHATS_PER_USER", "2")
    monkeypatch.setenv("AIRFLOW__AGENTCHAT__PAGE_CHAT_TIMEOUT", "7.5")
    assert PageLimits.from_config() == PageLimits(2, 7.5)
    for per_user, timeout in (("0", "5"), ("many", "5"), ("2", "-1")):
        monkeypatch.setenv("AIRFLOW__AGENTCHAT__PAGE_CHATS_PER_USER", per_user)
        monkeypatch.setenv("AIRFLOW__AGENTCHAT__PAGE_CHAT_TIMEOUT", timeout)
        with pytest.raises(ValueError, match=r"\[agentchat\] page_chats_per_user must be a whole number >= 1"):
            PageLimits.from_config()


def test_chat_slots_bound_each_user_apart() -> None:
    from airflow_agentchat.plugins.limits import ChatSlots

    slots = ChatSlots(2)
    assert slots.take("a") and slots.take("a") and not slots.take("a")
    assert slots.take("b")
    slots.give_back("a")
    assert slots.in_flight("a") == 1 and slots.take("a")
