"""Shards (batch/shards.py): splitting a JSONL input, and the agent's rate limit shared by the shards of a mapped
task."""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import pytest
from fakes import FakeTI

AGENT_CONN = "agentchat_units"


@pytest.fixture()
def agent(server, make_conn) -> str:
    return make_conn(AGENT_CONN, server.url)


@pytest.mark.parametrize(
    ("map_index", "mapped", "max_active", "expected"),
    [(-1, 1, None, 1), (0, 4, None, 4), (3, 8, 2, 2), (1, 3, 5, 3)],
)
def test_shards_at_once_divides_the_agent_s_limit(map_index, mapped, max_active, expected):
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    op = AgentChatBatchOperator(
        task_id="ask", prompts=["x"], output_path="file:///tmp/unused.jsonl", requests_per_minute=600
    )
    op.max_active_tis_per_dagrun = max_active
    ti = FakeTI("dag", "ask", "run", map_index, 1, mapped=mapped)
    assert op.shards_at_once({"ti": ti}) == expected
    if map_index >= 0:
        assert ti.asked == [{"dag_id": "dag", "task_ids": ["ask"], "run_ids": ["run"]}]


@pytest.mark.serial  # judges pacing by the arrival times of requests
def test_a_shard_paces_at_its_share_of_the_agent_s_limit(agent, server, tmp_path):
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    limit = 2400  # the agent's: 40 a second; a shard of four gets 10 a second
    op = AgentChatBatchOperator(
        task_id="ask",
        prompts=[f"share {i}" for i in range(30)],
        output_path=f"file://{tmp_path}/out.jsonl",
        agentchat_conn_id=agent,
        max_concurrency=8,
        requests_per_minute=limit,
    )
    summary = op.execute({"ti": FakeTI("dag", "ask", "run", 2, 1, mapped=4)})

    assert summary["rate_share"] == {
        "shards_at_once": 4,
        "requests_per_minute": limit / 4,
        "tokens_per_minute": None,
        "connection_requests_per_minute": None,
        "connection_tokens_per_minute": None,
        "shared_backend": None,
    }
    stamps = sorted(server.stats()["timestamps"])
    assert len(stamps) == 30
    for window in (0.5, 1.0, 2.0):  # what one shard may send in any window: its share, plus one at the edge
        busiest = max(bisect.bisect_left(stamps, t + window) - i for i, t in enumerate(stamps))
        assert busiest <= limit / 4 / 60 * window + 1, (window, busiest)


def test_templated_rate_limits_become_numbers():
    """``requests_per_minute="{{ params.rpm }}"`` renders to text: the batch paces at that number."""
    from airflow_agentchat.arguments import rate_limit as _limit

    assert _limit("requests_per_minute", "250") == 250.0
    assert _limit("requests_per_minute", "") is None
    with pytest.raises(ValueError, match="requests_per_minute must be a positive number"):
        _limit("requests_per_minute", "fast")
    with pytest.raises(ValueError, match="tokens_per_minute"):
        _limit("tokens_per_minute", "0")


# ------------------------------------------------------------------------------------------------ shards


def test_split_jsonl_is_deterministic_and_complete(tmp_path):
    from airflow_agentchat.batch import split_jsonl

    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"id": "s{i}", "prompt": "p{i}"}}\n' for i in range(10)) + "\n\n")
    uris = split_jsonl(f"file://{source}", num_shards=3)
    assert [u.rsplit("/", 1)[1] for u in uris] == [f"in-{i:05d}-of-00003.jsonl" for i in range(3)]
    contents = [Path(u.removeprefix("file://")).read_text().splitlines() for u in uris]
    assert [len(c) for c in contents] == [4, 4, 2]
    assert [json.loads(line)["id"] for c in contents for line in c] == [f"s{i}" for i in range(10)]
    assert split_jsonl(f"file://{source}", num_shards=3) == uris
    assert len(split_jsonl(str(source), tmp_path / "by_size", shard_size=5)) == 2
