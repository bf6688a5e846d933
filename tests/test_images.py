"""Images for a prompt (images.py): https URLs sent as they are, local files and object storage URIs read into
``data:`` URLs, the type from the bytes, the size cap."""

from __future__ import annotations

import base64

import pytest
from fakes import BUCKET, JPEG, PNG

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator


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
