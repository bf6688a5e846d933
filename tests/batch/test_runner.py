"""Batches and the endpoint as DigitalOcean serves it today, against the dev server in this process: an answer the
content filter stopped is an error line of its own type, and a shared cached prefix is read, summed and priced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeTI

from airflow_agentchat.exceptions import AgentChatError

CONN = "agentchat_batch_content"
SHARED = ("Label the ticket as bug, question or praise. " * 20).strip()
SYSTEM = {"role": "system", "content": [{"type": "text", "text": SHARED, "cache_control": {"type": "ephemeral"}}]}


def run(tmp_path: Path, **kwargs):
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    ti = FakeTI("content", "batch", "run-1", -1, 1)
    op = AgentChatBatchOperator(
        task_id="batch", agentchat_conn_id=CONN, output_path=f"file://{tmp_path}/out.jsonl", **kwargs
    )
    try:
        return op.execute({"ti": ti}), ti
    except AgentChatError as exc:
        return exc, ti


def lines_of(tmp_path: Path) -> dict[str, dict]:
    return {line["id"]: line for line in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}


def test_a_filtered_answer_is_a_content_filter_line_counted_and_resent_only_with_retry_failed(
    devserver, make_conn, tmp_path
):
    make_conn(CONN, devserver.url, prompt_token_price=1.0, completion_token_price=2.0)
    prompts = [{"id": "ok", "prompt": "fine"}, {"id": "bad", "prompt": "rude [[fault:content_filter:times=1]]"}]
    devserver.reset()
    error, ti = run(tmp_path, prompts=prompts, max_failed_fraction=0.0)
    assert isinstance(error, AgentChatError) and "1 of 2 items failed" in str(error)
    summary = ti.xcom["summary"]
    assert summary["failed"] == 1 and summary["error_types"] == {"content_filter": 1}
    line = lines_of(tmp_path)["bad"]
    assert line["status"] == "error" and line["error"]["type"] == "content_filter"
    assert line["text"] == "Echo:" and line["finish_reason"] == "content_filter"
    assert line["usage"]["total_tokens"] == 4 and line["cost"] > 0  # the filtered answer was paid for
    assert line["request_id"] and line["request_id"] in line["error"]["message"]

    summary, _ = run(tmp_path, prompts=prompts, max_failed_fraction=0.5, retry_failed=False)
    assert summary["sent"] == 0 and summary["error_types"] == {"content_filter": 1}  # not sent again
    summary, _ = run(tmp_path, prompts=prompts, retry_failed=True)
    assert summary["sent"] == 1 and summary["failed"] == 0  # sent again; times=1 let it through
    assert lines_of(tmp_path)["bad"]["text"] == "Echo: rude"


@pytest.mark.parametrize("output_schema", [None, {"type": "object", "properties": {"label": {"type": "string"}}}])
def test_content_filter_wins_over_the_output_schema(devserver, make_conn, tmp_path, output_schema):
    make_conn(CONN, devserver.url)
    devserver.reset()
    prompts = [{"id": "x", "prompt": "[[fault:content_filter]] hi"}]
    error, _ = run(tmp_path, prompts=prompts, output_schema=output_schema)
    assert isinstance(error, AgentChatError)
    assert lines_of(tmp_path)["x"]["error"]["type"] == "content_filter"


def test_a_shared_cached_prefix_is_read_summed_and_priced(devserver, make_conn, tmp_path):
    prices = {"prompt_token_price": 3.0, "completion_token_price": 15.0}
    make_conn(CONN, devserver.url, cached_prompt_token_price=0.3, cache_write_token_price=3.75, **prices)
    devserver.reset()
    prompts = [{"id": str(i), "messages": [SYSTEM], "prompt": f"ticket {i}"} for i in range(5)]
    summary, ti = run(tmp_path, prompts=prompts, max_concurrency=1)
    prefix = len(SHARED.split()) + 1
    lines = lines_of(tmp_path)
    assert lines["0"]["usage"]["cache_created_input_tokens"] == prefix
    assert all(lines[str(i)]["usage"]["cache_read_input_tokens"] == prefix for i in range(1, 5))
    usage = summary["usage"]
    assert usage["cache_read_input_tokens"] == 4 * prefix and usage["cache_created_input_tokens"] == prefix
    assert usage["cache_creation"] == {"ephemeral_5m_input_tokens": prefix, "ephemeral_1h_input_tokens": 0}
    plain = usage["prompt_tokens"] - 5 * prefix
    expected = (plain * 3.0 + 4 * prefix * 0.3 + prefix * 3.75 + usage["completion_tokens"] * 15.0) / 1e6
    assert summary["cost"] == round(expected, 6)
    assert sum(line["cost"] for line in lines.values()) == pytest.approx(expected, abs=1e-5)
    assert ti.xcom  # usage and cost reached XCom
