"""Result lines are written by pydantic-core's encoder; they must read back exactly as the ``json`` module's did."""

from __future__ import annotations

import json
import math

import pytest

from airflow_agentchat.batch.results import result_line

CONTEXTS = [
    None,
    {"row": 1, "tags": ["a", "b"], "nested": {"x": None, "ok": True}},
    {"text": 'quote " backslash \\ newline \n tab \t nul \x00 del \x7f é € 😀 \u2028'},
    {"floats": [0.0, -0.0, 1.5, 1e16, 1e-7, 123456789.123456789, 2.5e-300], "big": 2**62},
    ["a", 1, 2.5, None, [], {}],
    {"lone surrogate": "bad \ud800 text"},
]


@pytest.mark.parametrize("context", CONTEXTS)
def test_a_line_reads_back_as_the_record_json_would_write(context: object) -> None:
    line = result_line(
        "id-1",
        None,
        answer={"text": 'é 😀 "x"\n', "finish_reason": "stop", "output": {"n": 1.25}},
        usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        attempts=1,
        latency_ms=12.3,
        request_id="req-1",
        context=context,
        response=b'{"id":"c"}',
        cost=1.2e-05,
        conn_id="agentchat_default",
    )
    assert b"\n" not in line
    record = json.loads(line)
    expected = json.loads(
        json.dumps(
            {
                "id": "id-1",
                "status": "ok",
                "text": 'é 😀 "x"\n',
                "finish_reason": "stop",
                "output": {"n": 1.25},
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                "cost": 1.2e-05,
                "attempts": 1,
                "latency_ms": 12.3,
                "conn_id": "agentchat_default",
                "request_id": "req-1",
                **({"context": context} if context is not None else {}),
                "response": {"id": "c"},
            }
        )
    )
    assert record == expected
    assert list(record) == list(expected)  # the same key order


def test_a_value_json_writes_as_a_constant_keeps_it() -> None:
    line = result_line("i", {"type": "x", "message": "m"}, attempts=0, latency_ms=math.inf, context={"v": math.nan})
    assert b"Infinity" in line and b"NaN" in line
    record = json.loads(line)
    assert record["latency_ms"] == math.inf and math.isnan(record["context"]["v"])
