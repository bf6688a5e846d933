"""airflow_agentchat/spend.py: the one prompt estimate, the one completion cap, the one cost formula, and the
batch's token and cost budgets through ``execute`` against the session dev server: the batch stops sending at
its budget and a rerun continues."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
from fakes import FakeTI

from airflow_agentchat.batch.items import stable_id
from airflow_agentchat.spend import (
    DEFAULT_COMPLETION_TOKENS,
    MEDIA_PART_TOKENS,
    Budget,
    BudgetExhaustedError,
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


# ---------------------------------------------------------------------------------- the batch's budget

CONN = "agentchat_budget"
PROMPT_PRICE = 2.5  # per million prompt tokens
COMPLETION_PRICE = 10.0


@pytest.fixture()
def server(server):
    """The shared clean dev server, answering after 30 ms."""
    server.configure(latency_ms=30)  # requests overlap, so the stop has requests in flight
    return server


@pytest.fixture()
def conn(server, make_conn) -> str:
    return make_conn(CONN, server.url, prompt_token_price=PROMPT_PRICE, completion_token_price=COMPLETION_PRICE)


def batch(tmp_path: Path, **kwargs):
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    kwargs.setdefault("output_path", f"file://{tmp_path}/out.jsonl")
    kwargs.setdefault("agentchat_conn_id", CONN)
    return AgentChatBatchOperator(task_id="batch", **kwargs)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def price(usage: dict) -> float:
    return round((usage["prompt_tokens"] * PROMPT_PRICE + usage["completion_tokens"] * COMPLETION_PRICE) / 1e6, 6)


PROMPTS = [f"budget question number {i}" for i in range(60)]


def test_batch_stops_at_its_budget_and_a_rerun_sends_only_the_rest(conn, server, tmp_path):
    out = tmp_path / "out.jsonl"
    ti = FakeTI()
    with pytest.raises(BudgetExhaustedError) as failure:
        batch(tmp_path, prompts=PROMPTS, max_concurrency=6, max_total_tokens=400).execute({"ti": ti})
    first = lines(out)
    sent = server.stats(timestamps=False)["total"]
    # Stopped part way; every request that was sent (in flight at the stop included) has its line.
    assert 0 < sent < len(PROMPTS)
    assert len(first) == sent and all(line["status"] == "ok" for line in first)
    used = sum(line["usage"]["total_tokens"] for line in first)
    message = str(failure.value)
    assert f"{used} of max_total_tokens=400 tokens used" in message
    assert f"{len(PROMPTS) - sent} items not sent" in message
    # Usage and cost reached XCom before the task failed.
    assert ti.xcom["usage"]["total_tokens"] == used
    assert ti.xcom["cost"] == price(ti.xcom["usage"])
    assert ti.xcom["summary"]["not_sent"] == len(PROMPTS) - sent

    assert used <= 400  # reservations are estimates taken before sending, so in flight never overshot here

    summary = batch(tmp_path, prompts=PROMPTS, max_concurrency=6, max_total_tokens=100_000).execute({"ti": FakeTI()})
    stats = server.stats(timestamps=False)
    assert stats["total"] == len(PROMPTS)  # the rerun sent exactly the rest
    assert all(stats["by_prompt"][p] == 1 for p in PROMPTS)
    final = lines(out)
    ids = [line["id"] for line in final]
    assert len(ids) == len(set(ids)) == len(PROMPTS)  # complete, 0 duplicates
    assert set(ids) == {stable_id(p) for p in PROMPTS}
    assert summary["duplicates"] == 0 and summary["budget_exhausted"] is False
    assert summary["usage"]["total_tokens"] == sum(line["usage"]["total_tokens"] for line in final)


def test_a_budget_too_small_for_any_request_says_why(conn, server, tmp_path):
    """max_total_tokens=60 and no max_tokens: every request reserves its prompt plus 64 completion tokens."""
    with pytest.raises(BudgetExhaustedError) as failure:
        batch(tmp_path, prompts=PROMPTS[:12], max_total_tokens=60).execute({"ti": FakeTI()})
    message = str(failure.value)
    assert "0 of max_total_tokens=60 tokens used; 12 items not sent" in message
    assert "64 tokens before the first answer" in message and "Set max_tokens" in message
    assert server.stats(timestamps=False)["total"] == 0


def test_on_budget_exhausted_succeed_returns_the_summary(conn, server, tmp_path):
    summary = batch(
        tmp_path, prompts=PROMPTS[:20], max_concurrency=2, max_total_tokens=150, on_budget_exhausted="succeed"
    ).execute({"ti": FakeTI()})
    sent = server.stats(timestamps=False)["total"]
    assert summary["budget_exhausted"] is True and 0 < sent < 20
    assert summary["not_sent"] == 20 - sent == 20 - summary["total"]


def test_cost_is_usage_times_price_on_lines_summary_and_xcom(conn, server, tmp_path):
    ti = FakeTI()
    summary = batch(tmp_path, prompts=PROMPTS[:10], max_concurrency=3).execute({"ti": ti})
    out = lines(tmp_path / "out.jsonl")
    assert len(out) == 10
    for line in out:
        assert line["cost"] == price(line["usage"]) and line["cost"] > 0
    assert summary["cost"] == price(summary["usage"]) == ti.xcom["cost"]
    assert ti.xcom["usage"] == summary["usage"]


def test_max_cost_stops_like_max_total_tokens(conn, server, tmp_path):
    per_item_cost_bound = 0.003
    with pytest.raises(BudgetExhaustedError, match=r"max_cost=0\.003"):
        batch(tmp_path, prompts=PROMPTS, max_concurrency=2, max_cost=per_item_cost_bound).execute({"ti": FakeTI()})
    out = lines(tmp_path / "out.jsonl")
    sent = server.stats(timestamps=False)["total"]
    assert 0 < sent < len(PROMPTS) and len(out) == sent


def test_max_cost_without_prices_fails_before_any_request(server, make_conn, tmp_path):
    make_conn(CONN, server.url)
    with pytest.raises(Exception, match="max_cost needs prices"):
        batch(tmp_path, prompts=PROMPTS[:3], max_cost=1.0).execute({"ti": FakeTI()})
    assert server.stats(timestamps=False)["total"] == 0


def test_bad_budget_arguments_fail_at_parse_time():
    from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

    with pytest.raises(ValueError, match="max_total_tokens must be a whole number >= 1"):
        AgentChatCompletionOperator(task_id="t", prompt="x", max_total_tokens=0)
    with pytest.raises(ValueError, match="max_cost must be a number > 0"):
        AgentChatCompletionOperator(task_id="t", prompt="x", max_cost=-1)
    with pytest.raises(ValueError, match="on_budget_exhausted must be one of fail, succeed"):
        batch(Path("/tmp"), prompts=["x"], on_budget_exhausted="ignore")
