"""airflow_agentchat/spend.py: the one prompt estimate, the one completion cap, the one cost formula."""

from __future__ import annotations

import base64
import logging

import pytest

from airflow_agentchat.spend import (
    DEFAULT_COMPLETION_TOKENS,
    MEDIA_PART_TOKENS,
    Budget,
    Prices,
    completion_cap,
    estimate,
)
from airflow_agentchat.usage import TokenUsage


@pytest.fixture(scope="module")
def build():
    from airflow_agentchat.models import build_request

    return build_request


def image(size: int) -> dict:
    data = base64.b64encode(b"\x89PNG" + b"\0" * size).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def test_text_counts_its_characters_and_messages_their_overhead():
    messages = [{"role": "system", "content": "s" * 40}, {"role": "user", "content": "u" * 400}]
    assert estimate(messages) == 440 // 4 + 2 * 4 + 1


def test_an_image_counts_a_fixed_estimate_not_the_length_of_its_data_url(build):
    small = build([{"role": "user", "content": [{"type": "text", "text": "what is this?"}, image(10)]}])
    large = build([{"role": "user", "content": [{"type": "text", "text": "what is this?"}, image(1_000_000)]}])
    assert estimate(small) == estimate(large) == len("what is this?") // 4 + 4 + MEDIA_PART_TOKENS + 1
    video = {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}
    assert estimate([{"role": "user", "content": [video, video]}]) == 4 + 2 * MEDIA_PART_TOKENS + 1


def test_a_request_and_its_messages_as_dicts_estimate_the_same(build):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "x" * 100}]},
        {"role": "assistant", "content": "ok"},
    ]
    assert estimate(build(messages)) == estimate(messages) == (100 + 2) // 4 + 8 + 1


@pytest.mark.parametrize(
    ("fields", "cap"),
    [
        ({}, None),
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 300}, 300),
        ({"max_tokens": 500, "max_completion_tokens": 300}, 300),  # both set: the smaller
        ({"max_tokens": 40, "max_completion_tokens": 300}, 40),
        ({"max_tokens": 40, "n": 3}, 120),  # times n
        ({"max_completion_tokens": 256, "n": 2}, 512),
    ],
)
def test_the_completion_cap(build, fields, cap):
    assert completion_cap(build([{"role": "user", "content": "hi"}], **fields)) == cap


def test_the_batch_and_the_operator_spend_tracker_use_the_same_estimate_and_cap(build):
    from airflow_agentchat.batch.items import prepare
    from airflow_agentchat.operators.answer import TaskSpend

    params = {"max_tokens": 400, "max_completion_tokens": 300, "n": 2}
    item = {"prompt": "p" * 123, "system_prompt": "be brief", **params}
    (prepared,) = prepare([item], build_request=build, system_prompt=None, shared={})
    request = prepared.request
    assert (prepared.est_prompt_tokens, prepared.max_completion_tokens) == (estimate(request), 600)

    class Operator:
        log = logging.getLogger("test")
        max_total_tokens, max_cost, agentchat_conn_id = 10_000, None, "none"

        def prices(self) -> Prices:
            return Prices()

    spend = TaskSpend(Operator(), {})
    assert spend.check(request) == (estimate(request), 600)


def test_cost_prices_cache_tokens_and_the_budget_reserves_with_the_same_formula():
    prices = Prices.from_extra({"prompt_token_price": 2, "completion_token_price": 8, "cached_prompt_token_price": 0.5})
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100, "cache_read_input_tokens": 600}
    assert prices.cost(usage) == round((400 * 2 + 600 * 0.5 + 100 * 8) / 1e6, 6)
    budget = Budget(max_cost=1.0, prices=prices)
    assert budget.reserve(1000, 100)
    assert budget.reserved_cost == prices.cost(TokenUsage(1000, 100, 1100))


def test_the_default_completion_estimate_is_documented():
    from pathlib import Path

    docs = (Path(__file__).resolve().parent.parent / "docs" / "incremental.md").read_text()
    assert str(DEFAULT_COMPLETION_TOKENS) in docs and str(MEDIA_PART_TOKENS) in docs
