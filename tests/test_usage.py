"""TokenUsage: the one place where "nothing used" is written and usages are summed."""

from __future__ import annotations

from airflow_agentchat.usage import ZERO, TokenUsage


def test_counts_are_read_from_any_usage_mapping():
    usage = {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "completion_tokens_details": {"reasoning_tokens": 1},
    }
    assert TokenUsage.of(usage) == TokenUsage(3, 2, 5)
    assert TokenUsage.of({"total_tokens": 7, "prompt_tokens": None, "completion_tokens": True}) == TokenUsage(0, 0, 7)
    assert TokenUsage.of(None) == TokenUsage.of({}) == ZERO


def test_usages_add_up_and_write_the_three_counts():
    total = ZERO
    for usage in ({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, {"total_tokens": 4}):
        total += TokenUsage.of(usage)
    assert total.as_dict() == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 9}
    assert ZERO.as_dict() == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
