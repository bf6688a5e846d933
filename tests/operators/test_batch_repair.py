"""Typed batches repair invalid answers per item, as the completion operator does (``output_retries``).

Against the session dev server: ``[[fault:invalid_output]]`` makes an item's first answer invalid for the schema
and the answer after a repair valid; ``:times=N`` keeps the first N answers invalid. Every count asserted is the
server's own (requests received) or what the output and summary say.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeTI
from suite import stored_entries

CONN = "agentchat_batch_repair"
PROMPT_PRICE = 2.5  # per million prompt tokens
COMPLETION_PRICE = 10.0
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["billing", "login", "other"]}, "n": {"type": "integer"}},
    "required": ["label", "n"],
}
IMPOSSIBLE = {
    "type": "object",
    "properties": {"never": {"type": "string", "pattern": "^impossible-[0-9]{40}$"}},
    "required": ["never"],
}


@pytest.fixture()
def conn(server, make_conn) -> str:
    return make_conn(CONN, server.url, prompt_token_price=PROMPT_PRICE, completion_token_price=COMPLETION_PRICE)


def run(tmp_path: Path, name: str = "out", **kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]], FakeTI]:
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    kwargs.setdefault("output_path", f"file://{tmp_path}/{name}.jsonl")
    kwargs.setdefault("max_failed_fraction", 1.0)
    kwargs.setdefault("output_schema", SCHEMA)
    ti = FakeTI()
    summary = AgentChatBatchOperator(task_id="repair", agentchat_conn_id=CONN, **kwargs).execute({"ti": ti})
    path = tmp_path / f"{name}.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return summary, sorted(lines, key=lambda line: line["context"]["n"]), ti


def prompts(count: int, broken: set[int], marker: str = "[[fault:invalid_output]]") -> list[dict[str, Any]]:
    return [
        {"prompt": f"Ticket {n}: cannot log in{' ' + marker if n in broken else ''}", "context": {"n": n}}
        for n in range(count)
    ]


def price(usage: dict[str, Any]) -> float:
    return round((usage["prompt_tokens"] * PROMPT_PRICE + usage["completion_tokens"] * COMPLETION_PRICE) / 1e6, 6)


def requests(server) -> int:
    return server.stats(timestamps=False)["total"]


@pytest.mark.parametrize("strategy", ["tool", "json", "auto"])
def test_invalid_answers_are_repaired_one_request_per_round(conn, server, tmp_path, strategy):
    broken = {0, 4, 8}
    summary, lines, ti = run(tmp_path, prompts=prompts(12, broken), output_strategy=strategy)
    assert requests(server) == 12 + len(broken)  # valid items once, invalid ones once more (one repair round)
    assert summary["succeeded"] == 12 and summary["failed"] == 0 and summary["invalid_output"] == 0
    assert summary["sent"] == 12 and summary["requests"] == 15 and summary["repairs"] == 3
    single = {line["usage"]["total_tokens"] for line in lines if line["context"]["n"] not in broken}
    for line in lines:
        assert line["status"] == "ok" and set(line["output"]) == {"label", "n"}
        assert line["rounds"] == (2 if line["context"]["n"] in broken else 1)
        assert line["cost"] == price(line["usage"])
        if line["context"]["n"] in broken:  # both answers are paid for, so both are in the line
            assert line["usage"]["total_tokens"] > max(single)
            assert line["attempts"] == 2
    assert summary["usage"]["total_tokens"] == sum(line["usage"]["total_tokens"] for line in lines)
    assert summary["run_usage"] == summary["usage"] and ti.xcom["usage"] == summary["usage"]
    assert summary["cost"] == pytest.approx(sum(line["cost"] for line in lines), abs=1e-6)


def test_output_retries_zero_keeps_one_request_per_item(conn, server, tmp_path):
    broken = {1, 5}
    summary, lines, _ = run(tmp_path, prompts=prompts(8, broken), output_retries=0)
    assert requests(server) == 8
    assert summary["invalid_output"] == summary["failed"] == 2 and summary["repairs"] == 0
    for line in lines:
        if line["context"]["n"] in broken:
            assert line["status"] == "error" and line["error"]["type"] == "invalid_output"
            assert line["error"]["rounds"] == 1 and line["rounds"] == 1 and "raw" in line
        else:
            assert line["status"] == "ok"


def test_still_invalid_after_the_rounds_is_an_invalid_output_line(conn, server, tmp_path):
    broken = {2}
    summary, lines, _ = run(
        tmp_path,
        prompts=prompts(4, broken, "[[fault:invalid_output:times=9]]"),
        output_retries=2,
        include_response=False,
    )
    assert requests(server) == 3 + 3  # the broken item: its first answer and two repair rounds
    line = lines[2]
    assert line["status"] == "error" and line["error"]["type"] == "invalid_output"
    assert line["rounds"] == line["error"]["rounds"] == 3
    assert "after 3 round(s)" in line["error"]["message"] and line["error"]["errors"]
    assert line["attempts"] == 3 and line["usage"]["total_tokens"] > lines[0]["usage"]["total_tokens"]
    assert summary["error_types"] == {"invalid_output": 1} and summary["repairs"] == 2


def test_a_repair_round_sends_the_answer_and_the_errors_back(conn, server, tmp_path):
    """The repair request is the item's conversation, then the invalid answer, then the errors: what the dev
    server needs to answer validly (an assistant message after the marker)."""
    summary, lines, _ = run(
        tmp_path, prompts=prompts(1, {0}), output_strategy="json", output_retries=1, include_response=True
    )
    assert summary["succeeded"] == 1 and lines[0]["rounds"] == 2
    assert requests(server) == 2


def test_the_budget_counts_and_stops_repair_rounds(conn, server, tmp_path):
    summary, lines, _ = run(
        tmp_path,
        prompts=prompts(1, set()),
        output_schema=IMPOSSIBLE,
        output_retries=5,
        max_total_tokens=250,
        on_budget_exhausted="succeed",
    )
    rounds = requests(server)
    assert 1 <= rounds < 6 and summary["budget_exhausted"] is True
    line = lines[0]  # the paid (invalid) answers are recorded, not lost
    assert line["error"]["type"] == "invalid_output" and line["rounds"] == rounds
    assert line["usage"] == summary["usage"] and summary["usage"]["total_tokens"] <= 250

    # The repair rounds' usage is in the output, so a rerun's budget starts from it: nothing more fits.
    again, _, _ = run(
        tmp_path,
        prompts=prompts(1, set()),
        output_schema=IMPOSSIBLE,
        output_retries=5,
        max_total_tokens=summary["usage"]["total_tokens"] + 5,
        on_budget_exhausted="succeed",
    )
    assert again["sent"] == 0 and requests(server) == rounds


def test_a_repaired_answer_is_cached_under_the_first_request(conn, server, tmp_path):
    cache = f"file://{tmp_path}/cache"
    first, lines, _ = run(tmp_path, "one", prompts=prompts(3, {1}), cache_path=cache, temperature=0)
    assert requests(server) == 4 and first["succeeded"] == 3
    stored = [json.loads(data) for data in stored_entries(tmp_path / "cache").values()]
    assert len(stored) == 3  # one entry per item, none per round
    entry = next(e for e in stored if e["usage"]["total_tokens"] == lines[1]["usage"]["total_tokens"])
    assert "rounds" not in entry["fields"] and entry["fields"]["output"] == lines[1]["output"]

    second, again, _ = run(tmp_path, "two", prompts=prompts(3, {1}), cache_path=cache, temperature=0)
    assert requests(server) == 4 and second["cached"] == 3 and second["requests"] == 0
    assert again[1]["cached"] is True and again[1]["cached_usage"] == lines[1]["usage"]
    assert again[1]["output"] == lines[1]["output"]


def test_output_retries_is_checked_when_the_dag_is_parsed():
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    with pytest.raises(ValueError, match="output_retries must be a whole number >= 0"):
        AgentChatBatchOperator(task_id="x", prompts=["a"], output_path="file:///tmp/x.jsonl", output_retries=-1)
