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


CACHED_READ = {
    "prompt_tokens": 1200,
    "completion_tokens": 20,
    "total_tokens": 1220,
    "cache_created_input_tokens": 0,
    "cache_read_input_tokens": 1000,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
}
CACHED_WRITE = {
    "prompt_tokens": 1200,
    "completion_tokens": 20,
    "total_tokens": 1220,
    "cache_created_input_tokens": 1000,
    "cache_read_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600},
}


def test_cache_counts_are_read_summed_and_written_back():
    from airflow_agentchat.usage import UsageTally

    read, write = TokenUsage.of(CACHED_READ), TokenUsage.of(CACHED_WRITE)
    assert (read.cache_read_input_tokens, write.cache_created_input_tokens) == (1000, 1000)
    assert (write.ephemeral_5m_input_tokens, write.ephemeral_1h_input_tokens) == (400, 600)
    assert read.as_dict() == CACHED_READ and write.as_dict() == CACHED_WRITE
    total = ZERO + read + write + TokenUsage.of({"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6})
    expected = {
        "prompt_tokens": 2405,
        "completion_tokens": 41,
        "total_tokens": 2446,
        "cache_created_input_tokens": 1000,
        "cache_read_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600},
    }
    assert total.as_dict() == expected
    tally = UsageTally()
    for usage in (CACHED_READ, CACHED_WRITE, {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}, None):
        tally.add(usage)
    assert tally.total() == total
    # odd values count as zero, as for the totals
    assert TokenUsage.of({"cache_read_input_tokens": "7", "cache_creation": [1]}) == ZERO


def test_cached_tokens_are_priced_by_their_own_extras():
    from airflow_agentchat.spend import Prices

    base = {"prompt_token_price": 2.0, "completion_token_price": 10.0}
    # no cache prices: cached tokens cost the prompt price, as before
    assert Prices.from_extra(base).cost(CACHED_READ) == (1200 * 2.0 + 20 * 10.0) / 1e6
    prices = Prices.from_extra({**base, "cached_prompt_token_price": "0.2", "cache_write_token_price": 2.5})
    assert prices.cost(CACHED_READ) == round((200 * 2.0 + 1000 * 0.2 + 20 * 10.0) / 1e6, 6)
    assert prices.cost(CACHED_WRITE) == round((200 * 2.0 + 1000 * 2.5 + 20 * 10.0) / 1e6, 6)
    assert prices.cost(TokenUsage.of(CACHED_READ) + TokenUsage.of(CACHED_WRITE)) == round(
        (400 * 2.0 + 1000 * 0.2 + 1000 * 2.5 + 40 * 10.0) / 1e6, 6
    )
    # a cached-token price alone is a known price list
    assert Prices.from_extra({"cached_prompt_token_price": 1}).cost(CACHED_READ) == 0.001


def test_a_bad_cache_price_names_its_extra():
    import pytest

    from airflow_agentchat.exceptions import AgentChatError
    from airflow_agentchat.spend import Prices

    with pytest.raises(AgentChatError, match="cache_write_token_price"):
        Prices.from_extra({"cache_write_token_price": "cheap"})
    with pytest.raises(AgentChatError, match="cached_prompt_token_price"):
        Prices.from_extra({"cached_prompt_token_price": -1})
