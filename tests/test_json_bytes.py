"""JSON bytes (airflow_agentchat/json_bytes.py): what ``json`` would read back, whichever encoder wrote it."""

from __future__ import annotations

import json
import math

from airflow_agentchat.json_bytes import json_bytes


def test_compact_utf8_that_reads_back_as_the_record() -> None:
    record = {"text": "naïve ☃", "n": 3, "f": 0.5, "none": None, "list": [1, "two"]}
    data = json_bytes(record)
    assert b" " not in data.replace("naïve ☃".encode(), b"") and "☃".encode() in data
    assert json.loads(data) == record


def test_a_lone_surrogate_is_escaped_and_reads_back_the_same() -> None:
    record = {"context": "bad \ud800 half"}
    data = json_bytes(record)
    assert b"\\ud800" in data
    assert json.loads(data) == record


def test_nan_and_infinity_are_written_as_json_writes_them() -> None:
    data = json_bytes({"a": math.nan, "b": math.inf})
    assert data == b'{"a":NaN,"b":Infinity}'
