"""Images from a DAG (``images=``, batch items' ``images``) and prompt caching (``cache_prompt``).

Files are read from the local disk and from S3 served by moto's standalone server; the requests go to the dev
server, whose echo counts the images and whose usage reports cache writes and reads.
"""

from __future__ import annotations

import base64
import json
import shutil

import pytest
from conftest import AIRFLOW_HOME, make_bucket
from fakes import FakeTI

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))
JPEG = b"\xff\xd8\xff\xe0" + b"JFIF" + bytes(32)
BUCKET = "agentchat-media"
STORAGE_CONN = "media_s3"
CONN = "agentchat_media"


def user_parts(op: AgentChatCompletionOperator) -> list[dict]:
    messages, _, _ = op.prepare()
    return messages[-1]["content"]


def decoded(part: dict) -> tuple[str, bytes]:
    head, _, data = part["image_url"]["url"].partition(";base64,")
    return head.removeprefix("data:"), base64.b64decode(data)


def test_a_local_file_is_sent_as_a_data_url_and_an_https_url_as_is(tmp_path):
    (tmp_path / "dent.png").write_bytes(PNG)
    op = AgentChatCompletionOperator(
        task_id="t", prompt="describe", images=[str(tmp_path / "dent.png"), "https://example.com/a.png"]
    )
    text, local, remote = user_parts(op)
    assert text == {"type": "text", "text": "describe"}
    assert local["type"] == "image_url" and decoded(local) == ("image/png", PNG)
    assert remote == {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}


def test_the_type_comes_from_the_bytes_and_anything_else_is_refused(tmp_path):
    (tmp_path / "photo.png").write_bytes(JPEG)  # a JPEG with the wrong name: sent as what it is
    (tmp_path / "id_rsa.png").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    op = AgentChatCompletionOperator(task_id="t", prompt="x", images=str(tmp_path / "photo.png"))
    assert decoded(user_parts(op)[1])[0] == "image/jpeg"
    op = AgentChatCompletionOperator(
        task_id="t", prompt="x", images=["https://e.com/a.png", str(tmp_path / "id_rsa.png")]
    )
    with pytest.raises(InvalidRequestError, match=r"images\[1\]: .*id_rsa.png' is not a PNG, JPEG, GIF or WEBP"):
        op.prepare()
    for ref, rule in (
        ("http://example.com/a.png", "http:// is sent in clear"),
        (str(tmp_path / "no"), "cannot be read"),
    ):
        with pytest.raises(InvalidRequestError, match=rf"images\[0\]: .*{rule}"):
            AgentChatCompletionOperator(task_id="t", prompt="x", images=[ref]).prepare()


def test_an_image_over_the_cap_is_refused_naming_it_and_the_cap(tmp_path):
    big = tmp_path / "huge.png"
    with big.open("wb") as handle:  # 4 GiB, sparse: reading it whole would exhaust the test's memory
        handle.write(PNG)
        handle.truncate(4 << 30)
    op = AgentChatCompletionOperator(task_id="t", prompt="x", images=[str(big)], max_image_bytes=1000)
    with pytest.raises(InvalidRequestError, match=r"images\[0\]: .*huge.png' is larger than max_image_bytes=1000"):
        op.prepare()
    (tmp_path / "small.png").write_bytes(PNG)
    op = AgentChatCompletionOperator(
        task_id="t", prompt="x", images=[str(tmp_path / "small.png")], max_image_bytes=len(PNG)
    )
    assert decoded(user_parts(op)[1])[1] == PNG  # exactly at the cap is fine
    with pytest.raises(ValueError, match="max_image_bytes must be a whole number >= 1"):
        AgentChatCompletionOperator(task_id="t", prompt="x", max_image_bytes=0)


def test_images_need_a_user_message():
    op = AgentChatCompletionOperator(task_id="t", system_prompt="s", messages=[], images=["https://e.com/a.png"])
    with pytest.raises(InvalidRequestError, match="images: need a user message"):
        op.prepare()


@pytest.fixture(scope="module")
def s3_url(moto_url):
    """The session's S3 server with this module's bucket and the images the tests read from it."""
    import boto3

    make_bucket(moto_url, BUCKET)
    client = boto3.client(
        "s3", endpoint_url=moto_url, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
    )
    client.put_object(Bucket=BUCKET, Key="claims/dent.jpg", Body=JPEG)
    client.put_object(Bucket=BUCKET, Key="claims/big.png", Body=PNG + bytes(5000))
    return moto_url


@pytest.fixture()
def storage_conn(s3_url, make_aws_conn) -> str:
    return make_aws_conn(STORAGE_CONN, s3_url, "media-key", "media-secret")


def test_an_object_storage_uri_is_read_through_the_storage_connection(storage_conn):
    op = AgentChatCompletionOperator(
        task_id="t", prompt="x", images=[f"s3://{BUCKET}/claims/dent.jpg"], storage_conn_id=storage_conn
    )
    assert decoded(user_parts(op)[1]) == ("image/jpeg", JPEG)
    op = AgentChatCompletionOperator(
        task_id="t",
        prompt="x",
        images=[f"s3://{BUCKET}/claims/big.png"],
        storage_conn_id=storage_conn,
        max_image_bytes=1024,
    )
    with pytest.raises(InvalidRequestError, match=r"images\[0\]: 's3://.*big.png' is larger than max_image_bytes=1024"):
        op.prepare()


def test_cache_prompt_marks_the_shared_prefix_and_is_checked():
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    op = AgentChatCompletionOperator(
        task_id="t",
        system_prompt="Label it.",
        prompt="x",
        output_schema=schema,
        output_strategy="json",
        cache_prompt="1h",
    )
    system, instruction, user = op.prepare()[0]
    assert system == {"role": "system", "content": "Label it."}
    # The last message of the prefix (the schema's instruction) carries the mark: everything before it is cached.
    assert instruction["role"] == "system" and instruction["content"][-1]["cache_control"] == {
        "type": "ephemeral",
        "ttl": "1h",
    }
    assert user == {"role": "user", "content": "x"}
    op = AgentChatCompletionOperator(task_id="t", system_prompt="Label it.", prompt="x")
    assert op.prepare()[0][0] == {"role": "system", "content": "Label it."}  # no cache_prompt: nothing marked
    with pytest.raises(ValueError, match=r"cache_prompt must be '5m', '1h' or None .*'10m'"):
        AgentChatCompletionOperator(task_id="t", prompt="x", cache_prompt="10m")
    op = AgentChatCompletionOperator(task_id="t", system_prompt="s", prompt="x", cache_prompt="{{ params.ttl }}")
    op.cache_prompt = "2h"  # what the template rendered to
    with pytest.raises(InvalidRequestError, match=r"cache_prompt: must be '5m', '1h'"):
        op.prepare()


def test_images_and_cache_prompt_from_a_dag(run_dag, devserver):
    devserver.reset()
    folder = AIRFLOW_HOME / "media_cases"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "dent.png").write_bytes(PNG)
    xcoms = run_dag("agentchat_media_cases")
    assert xcoms["_returncode"] == 0, xcoms["_log"][-3000:]
    assert xcoms[("first", -1, "return_value")] == "Echo: describe these [2 images]"
    assert xcoms[("second", -1, "return_value")] == "Echo: and this one [1 image]"
    first, second = xcoms[("first", -1, "usage")], xcoms[("second", -1, "usage")]
    # The first request wrote the marked system prompt to the cache, the second (same prefix) read it.
    assert first["cache_created_input_tokens"] > 0 and first["cache_read_input_tokens"] == 0
    assert second["cache_read_input_tokens"] == first["cache_created_input_tokens"]


def test_a_batch_sends_item_images_and_reads_its_cached_prefix(devserver, make_conn, tmp_path, storage_conn, s3_url):
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


def test_mark_prefix_marks_the_last_text_of_the_leading_system_messages():
    from airflow_agentchat.prompt_cache import mark_prefix

    marked = {"cache_control": {"type": "ephemeral", "ttl": "5m"}}
    given = [
        {"role": "developer", "content": "rules"},
        {"role": "system", "content": ["first", {"type": "text", "text": "second"}]},
        {"role": "user", "content": "question"},
    ]
    out = mark_prefix(given, "5m")
    assert out[0] == given[0] and out[2] == given[2]
    assert out[1]["content"] == ["first", {"type": "text", "text": "second", **marked}]
    assert given[1]["content"][1] == {"type": "text", "text": "second"}  # the caller's messages are not changed
    user_only = [{"role": "user", "content": "question"}]
    assert mark_prefix(user_only, "5m") == user_only  # no shared prefix: nothing to mark
    assert mark_prefix(given, None) is given
