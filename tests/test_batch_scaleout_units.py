"""The batch pieces scale-out relies on, checked in-process: storage credentials from a connection (S3 served by
moto's standalone server) and the agent's rate limit shared by the shards of a mapped task.

The full picture (Celery workers, a killed worker) is tests/test_scale_out.py; these run in seconds.
"""

from __future__ import annotations

import bisect
import json

import pytest
from conftest import make_bucket
from fakes import FakeTI

BUCKET = "agentchat-units"
STORAGE_CONN = "units_s3"
AGENT_CONN = "agentchat_units"


@pytest.fixture(scope="module")
def s3_url(moto_url):
    return make_bucket(moto_url, BUCKET)


@pytest.fixture()
def storage_conn(s3_url, make_aws_conn) -> str:
    return make_aws_conn(STORAGE_CONN, s3_url, "units-key", "units-secret")


@pytest.fixture()
def agent(server, make_conn) -> str:
    return make_conn(AGENT_CONN, server.url)


def _objects(s3_url: str, prefix: str) -> dict[str, bytes]:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=s3_url, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
    )
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {item["Key"]: client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read() for item in listed}


def test_split_and_batch_use_the_storage_connection_for_plain_s3_uris(storage_conn, agent, s3_url):
    from airflow.sdk import ObjectStoragePath

    from airflow_agentchat.batch import split_jsonl
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    source = ObjectStoragePath(f"s3://{BUCKET}/conn/items.jsonl", conn_id=storage_conn)
    source.write_bytes(b"".join(json.dumps({"id": f"i{n}", "prompt": f"item {n}"}).encode() + b"\n" for n in range(6)))

    shards = split_jsonl(f"s3://{BUCKET}/conn/items.jsonl", num_shards=2, storage_conn_id=storage_conn)
    # The URIs carry the connection, so mapped tasks reading them need nothing more.
    assert shards == [
        f"s3://{storage_conn}@{BUCKET}/conn/items.jsonl.shards/items-0000{i}-of-00002.jsonl" for i in range(2)
    ]
    plain = f"s3://{BUCKET}/conn/items.jsonl.shards/items-00000-of-00002.jsonl"
    op = AgentChatBatchOperator(
        task_id="ask", input_path=plain, storage_conn_id=storage_conn, agentchat_conn_id=agent, progress_interval=0.5
    )
    summary = op.execute({"ti": FakeTI("dag", "ask", "run", -1, 1, mapped=1)})

    assert summary["succeeded"] == 3 and summary["output_path"].startswith(f"s3://{storage_conn}@{BUCKET}/")
    stored = _objects(s3_url, "conn/")
    output = stored["conn/items.jsonl.shards/items-00000-of-00002.results.jsonl"]
    lines = [json.loads(raw) for raw in output.splitlines()]
    assert sorted(line["text"] for line in lines) == ["Echo: item 0", "Echo: item 1", "Echo: item 2"]
    assert not [key for key in stored if ".parts/" in key or key.endswith(".lease")]


def test_storage_conn_id_is_templated():
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    assert "storage_conn_id" in AgentChatBatchOperator.template_fields


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
