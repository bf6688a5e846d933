"""Batch results in storage (batch/store.py), in this process: outputs that cannot be written, the output lease,
composing the parts (against the fault server), and storage credentials from a connection (S3 served by moto's
standalone server)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
from fakes import FakeTI
from suite import make_bucket

from airflow_agentchat.batch.items import stable_id
from airflow_agentchat.batch.store import OutputPathError, ResultStore

CONN = "agentchat_edges"


@pytest.fixture()
def server(fault_server, make_conn):
    make_conn(CONN, fault_server.url)
    return fault_server


def run(tmp_path: Path, ti: FakeTI | None = None, **kwargs):
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    kwargs.setdefault("output_path", f"file://{tmp_path}/out.jsonl")
    op = AgentChatBatchOperator(task_id="batch", agentchat_conn_id=CONN, max_failed_fraction=1.0, **kwargs)
    return op.execute({"ti": ti or FakeTI("edges", "batch", "run-1", -1, 1)})


# ------------------------------------------------------------------------------------ unwritable output


@pytest.mark.parametrize(
    "where",
    [
        "under-a-file",  # a folder that is really a regular file: even root cannot create anything in it
        "proc",  # /proc takes no new files, root or not
        "nul",  # a NUL byte: no storage accepts it in a name
    ],
)
def test_unwritable_output_fails_before_the_first_request(server, tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    output = {
        "under-a-file": f"file://{blocker}/out.jsonl",
        "proc": "file:///proc/agentchat-batch/out.jsonl",
        "nul": f"file://{tmp_path}/out\x00.jsonl",
    }[where]
    with pytest.raises(OutputPathError, match="output_path") as caught:
        run(tmp_path, prompts=[f"never sent {i}" for i in range(5)], output_path=output)
    assert "cannot" in str(caught.value)
    assert sum(server.counts.values()) == 0  # nothing was paid for


# ----------------------------------------------------------------------------------------------- lease


def write_lease(tmp_path: Path, **fields: object) -> None:
    holder = {
        "dag_id": "other_dag",
        "task_id": "other_task",
        "run_id": "run-9",
        "map_index": -1,
        "try_number": 1,
        "hostname": "another-host",
        "pid": 12345,
        "token": "theirs",
        "heartbeat": time.time(),
    }
    (tmp_path / "out.jsonl.lease").write_text(json.dumps({**holder, **fields}))


def test_a_live_lease_of_another_task_refuses_the_run_before_sending(server, tmp_path):
    write_lease(tmp_path)
    with pytest.raises(OutputPathError, match="another live run") as caught:
        run(tmp_path, prompts=["blocked"])
    assert "other_task" in str(caught.value) and "another-host" in str(caught.value)
    assert sum(server.counts.values()) == 0
    assert json.loads((tmp_path / "out.jsonl.lease").read_text())["token"] == "theirs"  # not taken, not removed


@pytest.mark.parametrize(
    "holder",
    [
        {"heartbeat": time.time() - 3600},  # stale: its run died without releasing
        {"dag_id": "edges", "task_id": "batch", "run_id": "run-1", "try_number": 1},  # an earlier try of this TI
        {"hostname": socket.gethostname(), "pid": 2**22 + 12345},  # this host, and that process is gone
    ],
    ids=["stale", "same-task-instance", "dead-pid-on-this-host"],
)
def test_a_dead_holders_lease_is_taken_over(server, tmp_path, holder):
    write_lease(tmp_path, **holder)
    summary = run(tmp_path, ti=FakeTI("edges", "batch", "run-1", -1, 2), prompts=["taken over"])
    assert summary["succeeded"] == 1 and server.counts["taken over"] == 1
    assert not (tmp_path / "out.jsonl.lease").exists()  # released at the end


def test_heartbeat_renews_the_lease_and_notices_a_takeover(tmp_path):
    store = ResultStore(f"file://{tmp_path}/out.jsonl", owner={"dag_id": "d", "task_id": "t", "run_id": "r"})
    store.open()
    first = json.loads((tmp_path / "out.jsonl.lease").read_text())
    assert first["pid"] == os.getpid() and first["task_id"] == "t"
    time.sleep(0.01)
    store.heartbeat()
    assert json.loads((tmp_path / "out.jsonl.lease").read_text())["heartbeat"] > first["heartbeat"]
    write_lease(tmp_path)  # someone presumed this run dead and took over
    with pytest.raises(OutputPathError, match="lost the lease"):
        store.heartbeat()
    store.release()
    assert json.loads((tmp_path / "out.jsonl.lease").read_text())["token"] == "theirs"  # theirs is left alone


def test_compose_deletes_only_the_parts_it_read(server, tmp_path):
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()
    (parts / "README.txt").write_text("someone else's file")
    (parts / "part-20200101T000000000000-aaaaaa-000000.jsonl").write_text(
        json.dumps({"id": stable_id("old"), "status": "ok", "text": "earlier"}) + "\n"
    )
    summary = run(tmp_path, prompts=["old", "new"])
    assert summary["total"] == 2 and summary["sent"] == 1
    assert sorted(p.name for p in parts.iterdir()) == ["README.txt"]


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
def agent(devserver, make_conn) -> str:
    return make_conn(AGENT_CONN, devserver.url)


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
