"""The completion operators' prompt extras (operators/media.py): images need a user message, and a batch sends its
items' images and reads its cached prefix (S3 served by moto's standalone server, the dev server's echo)."""

from __future__ import annotations

import json

import pytest
from fakes import BUCKET, PNG, STORAGE_CONN, FakeTI

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

CONN = "agentchat_media"


def test_images_need_a_user_message():
    op = AgentChatCompletionOperator(task_id="t", system_prompt="s", messages=[], images=["https://e.com/a.png"])
    with pytest.raises(InvalidRequestError, match="images: need a user message"):
        op.prepare()


def test_a_batch_sends_item_images_and_reads_its_cached_prefix(devserver, make_conn, tmp_path, storage_conn):
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    make_conn(CONN, devserver.url)
    devserver.reset()
    local = tmp_path / "dent.png"
    local.write_bytes(PNG)
    prompts = [{"id": f"ok{i}", "prompt": f"claim {i}", "images": ["https://example.com/a.png"]} for i in range(6)] + [
        {"id": "s3", "prompt": "from s3", "images": [f"s3://{STORAGE_CONN}@{BUCKET}/claims/dent.jpg"]},
        {"id": "local", "prompt": "from disk", "images": [str(local)]},
        {
            "id": "parts",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "parts"},
                        {"type": "image_url", "image_url": {"url": "https://e.com/b.png"}},
                    ],
                }
            ],
        },
    ]
    op = AgentChatBatchOperator(
        task_id="batch",
        agentchat_conn_id=CONN,
        output_path=f"file://{tmp_path}/out.jsonl",
        prompts=prompts,
        system_prompt="Label the claim photo. " * 40,
        cache_prompt="5m",
        max_concurrency=1,
        max_failed_fraction=0.5,
    )
    ti = FakeTI("media", "batch", "run-1", -1, 1)
    summary = op.execute({"ti": ti})
    lines = {line["id"]: line for line in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert lines["ok0"]["text"] == "Echo: claim 0 [1 image]"
    assert lines["s3"]["text"] == "Echo: from s3 [1 image]"
    assert lines["parts"]["text"] == "Echo: parts [1 image]"
    # A batch row is data: it names no file on the worker's disk.
    assert lines["local"]["status"] == "error" and "images[0]" in lines["local"]["error"]["message"]
    assert "storage URI" in lines["local"]["error"]["message"]
    usage = summary["usage"]
    assert lines["ok0"]["usage"]["cache_created_input_tokens"] > 0  # one request at a time: the first writes
    assert usage["cache_read_input_tokens"] == 7 * lines["ok0"]["usage"]["cache_created_input_tokens"]
    assert summary["run_usage"]["cache_read_input_tokens"] == usage["cache_read_input_tokens"]
    assert ti.xcom["usage"] == usage
