"""Batch input (batch/items.py) through ``execute`` against the fault server: duplicate ids, ids compared as
text, empty input, encodings, lone surrogates and bad shared fields. Every check is on what the server counted
and on the files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeTI

from airflow_agentchat.batch.items import stable_id

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


def lines_of(path: Path) -> dict[str, dict]:
    return {line["id"]: line for line in map(json.loads, path.read_text().splitlines())}


# ------------------------------------------------------------------------------------------ duplicate ids


def test_same_id_other_content_is_an_invalid_item_and_never_overwrites(server, tmp_path):
    items = [
        {"id": 7, "prompt": "seven as a number"},
        {"id": "7", "prompt": "seven as text"},  # same id as text, other content
        {"id": "a", "prompt": "first a"},
        {"id": "a", "prompt": "second a"},
        {"id": "a", "prompt": "first a"},  # identical to the first: skipped, counted as a duplicate
        "plain",
        "plain",
    ]
    summary = run(tmp_path, prompts=items)
    out = lines_of(tmp_path / "out.jsonl")
    assert out["7"]["text"] == "Echo: seven as a number" and out["a"]["text"] == "Echo: first a"
    conflicts = {key: line for key, line in out.items() if "#" in key}
    assert sorted(conflicts) == sorted([f"7#{stable_id(items[1])}", f"a#{stable_id(items[3])}"])
    for key, line in conflicts.items():
        assert line["status"] == "error" and line["error"]["type"] == "invalid_item", line
        assert f"id {key.split('#')[0]!r}" in line["error"]["message"] and "other content" in line["error"]["message"]
    assert set(server.counts) == {"seven as a number", "first a", "plain"}
    assert summary["duplicates"] == 2 and summary["invalid"] == 2 and summary["total"] == 5

    # a rerun sends nothing and keeps the conflicts (invalid items are final)
    again = run(tmp_path, prompts=items)
    assert again["sent"] == 0 and sum(server.counts.values()) == 3 and again["failed"] == 2


def test_ids_compare_as_text_so_9_and_text_9_with_the_same_content_are_one_item(server, tmp_path):
    items = [{"id": 9, "prompt": "nine"}, {"id": "9", "prompt": "nine"}]
    summary = run(tmp_path, prompts=items)
    out = lines_of(tmp_path / "out.jsonl")
    assert list(out) == ["9"] and out["9"]["status"] == "ok"
    assert summary["duplicates"] == 1 and summary["invalid"] == 0 and server.counts == {"nine": 1}


# --------------------------------------------------------------------------------------------- empty input


def test_empty_input_writes_an_empty_output(server, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    for name, kwargs in {"inline": {"prompts": []}, "file": {"input_path": f"file://{empty}"}}.items():
        summary = run(tmp_path, output_path=f"file://{tmp_path}/{name}.jsonl", **kwargs)
        assert (tmp_path / f"{name}.jsonl").read_bytes() == b"" and summary["total"] == 0
        assert not (tmp_path / f"{name}.jsonl.parts").exists()
    assert sum(server.counts.values()) == 0


# ---------------------------------------------------------------------------------------------- encodings


def test_invalid_utf8_is_an_invalid_item_naming_the_line_and_a_bom_is_accepted(server, tmp_path):
    source = tmp_path / "input.jsonl"
    source.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps({"id": "first", "prompt": "after a BOM"}).encode()
        + b"\n"
        + b'{"id": "latin1", "prompt": "caf\xe9"}\n'
        + json.dumps({"id": "fine", "prompt": "caf\u00e9"}, ensure_ascii=False).encode()
        + b"\n"
    )
    summary = run(tmp_path, input_path=f"file://{source}")
    out = lines_of(tmp_path / "out.jsonl")
    assert out["first"]["text"] == "Echo: after a BOM" and out["fine"]["text"] == "Echo: caf\u00e9"
    (bad,) = [line for key, line in out.items() if key not in ("first", "fine")]
    assert bad["error"]["type"] == "invalid_item" and "line 2 is not valid UTF-8" in bad["error"]["message"]
    assert set(server.counts) == {"after a BOM", "caf\u00e9"}  # nothing with U+FFFD was sent
    assert summary["invalid"] == 1


def test_a_lone_surrogate_is_a_final_invalid_request(server, tmp_path):
    items = [{"id": "bad", "prompt": "half a pair \ud800 here", "context": {"note": "\udfff"}}, "good"]
    summary = run(tmp_path, prompts=items)
    out = lines_of(tmp_path / "out.jsonl")
    assert out["bad"]["status"] == "error" and out["bad"]["error"]["type"] == "invalid_request"
    assert out["bad"]["attempts"] == 0 and out["bad"]["context"] == {"note": "\udfff"}
    assert set(server.counts) == {"good"}
    assert summary["failed"] == 1
    again = run(tmp_path, prompts=items)  # final: a rerun does not try it again
    assert again["sent"] == 0


def test_bad_shared_fields_fail_before_touching_the_output(server, tmp_path):
    from airflow_agentchat.exceptions import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="temperature"):
        run(tmp_path, prompts=["x"], temperature=9)
    assert list(tmp_path.iterdir()) == [] and sum(server.counts.values()) == 0


def test_canonical_json_is_what_json_dumps_writes_so_ids_stay_the_same():
    import datetime
    import json

    from airflow_agentchat.batch.items import canonical_json

    values = ["naïve ☃", "bad \ud800", {"b": 1, "a": [1.5, None, True]}, [{"z": "x"}], datetime.date(2026, 12, 4), 7]
    for value in values:
        assert canonical_json(value) == json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
