"""What a batch records (batch/results.py): the one shape of a result line, the whole response on it, and the
error kind on an error line."""

from __future__ import annotations

import json

from batches import lines_of, make_op
from fakes import FakeTI


def test_error_lines_carry_the_kind_of_the_error_class(make_conn, tmp_path):
    """The type on an error line is the error's own kind, so a refused connection says so."""
    import socket

    from airflow_agentchat.batch.items import InvalidItemError
    from airflow_agentchat.exceptions import RefusedError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    op = make_op(
        tmp_path,
        prompts=["x", {"id": "typo", "prompt": "y", "temprature": 1}],
        agentchat_conn_id=make_conn("batch_closed", closed),
        max_retries=0,
        max_failed_fraction=1.0,
    )
    summary = op.execute({"ti": FakeTI()})
    assert summary["error_types"] == {RefusedError.kind: 1, InvalidItemError.kind: 1}
    kinds = {line["id"]: line["error"]["type"] for line in lines_of(tmp_path / "out.jsonl")}
    assert kinds["typo"] == "invalid_item" and sorted(kinds.values()) == ["connection_refused", "invalid_item"]


def test_result_lines_ok_and_error_have_one_shape():
    from airflow_agentchat.batch.results import result_line

    answer = {"text": "hi", "finish_reason": "stop"}
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    ok = json.loads(result_line("a", None, answer=answer, usage=usage, attempts=1, latency_ms=2.0, request_id="r"))
    failed = json.loads(result_line("b", {"type": "timeout", "message": "m"}, attempts=2, latency_ms=3.0, context=7))
    core = {"id", "status", "usage", "attempts", "latency_ms"}
    assert core <= set(ok) and core <= set(failed)
    assert (ok["status"], ok["text"], ok["request_id"], "error" in ok) == ("ok", "hi", "r", False)
    assert (failed["status"], failed["error"]["type"], failed["context"]) == ("error", "timeout", 7)
    assert failed["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_the_response_on_a_line_is_the_whole_response():
    from airflow_agentchat.batch.results import result_line
    from airflow_agentchat.models import ChatCompletion

    raw = {
        "id": "c1",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "h\u00e9 \u2028"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        "retrieval": {"retrieved_data": [{"doc": 1}]},
        "vendor_extra": {"kept": True},
    }
    completion = ChatCompletion.model_validate(raw)
    line = result_line(
        "a", None, answer={"text": completion.text}, attempts=1, latency_ms=1.0, response=completion.to_json()
    )
    assert line.count(b"\n") == 0
    record = json.loads(line)
    assert record["response"] == completion.to_dict()
    assert record["response"]["vendor_extra"] == {"kept": True} and record["text"] == "h\u00e9 \u2028"
