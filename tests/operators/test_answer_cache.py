"""The response cache of one completion task (operators/answer_cache.py) on the single operator and
``@task.agent_chat``: a hit sends nothing and pays nothing, as the dev server's request counter says."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeTI

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["label", "score"],
}


def sent(server) -> int:
    return server.stats(timestamps=False)["total"]


def run(conn_id: str, cache: Path, **kwargs):
    """Execute a fresh operator (as a new task run would) and return its return_value and XComs."""
    kwargs.setdefault("prompt", "What changed in the orders table?")
    operator = AgentChatCompletionOperator(task_id="t", agentchat_conn_id=conn_id, cache_path=str(cache), **kwargs)
    ti = FakeTI()
    value = operator.execute({"ti": ti})
    return value, ti.xcom


def test_the_second_run_sends_nothing_and_pays_nothing(server, make_conn, tmp_path):
    conn = make_conn("cache_a", server.url, prompt_token_price=1.0, completion_token_price=2.0)
    first, xcom1 = run(conn, tmp_path, temperature=0)
    assert sent(server) == 1 and xcom1["cached"] is False and xcom1["usage"]["total_tokens"] > 0
    assert xcom1["cost"] > 0
    second, xcom2 = run(conn, tmp_path, temperature=0)
    assert sent(server) == 1  # no request at all
    assert second == first
    assert xcom2["cached"] is True and xcom2["cached_usage"] == xcom1["usage"]
    assert xcom2["usage"]["total_tokens"] == 0 and xcom2["cost"] == 0
    assert xcom2["response"]["cached"] is True and xcom2["response"]["choices"] == xcom1["response"]["choices"]


def test_a_changed_prompt_or_sampling_field_misses(server, make_conn, tmp_path):
    conn = make_conn("cache_b", server.url)
    run(conn, tmp_path, temperature=0)
    _, xcom = run(conn, tmp_path, temperature=0, prompt="What changed in the customers table?")
    assert xcom["cached"] is False and sent(server) == 2
    _, xcom = run(conn, tmp_path, temperature=0, max_tokens=50)
    assert xcom["cached"] is False and sent(server) == 3
    _, xcom = run(conn, tmp_path, temperature=0, system_prompt="Be brief.")
    assert xcom["cached"] is False and sent(server) == 4


def test_a_non_deterministic_request_is_not_cached_unless_asked(server, make_conn, tmp_path):
    conn = make_conn("cache_c", server.url)
    for kwargs in ({"temperature": 0.7}, {}):  # unset temperature is the endpoint's default, not 0
        run(conn, tmp_path, **kwargs)
        _, xcom = run(conn, tmp_path, **kwargs)
        assert xcom["cached"] is False
    assert sent(server) == 4
    assert not any(tmp_path.iterdir())  # nothing was stored
    run(conn, tmp_path, temperature=0.7, seed=7)  # a seed makes it deterministic
    _, xcom = run(conn, tmp_path, temperature=0.7, seed=7)
    assert xcom["cached"] is True and sent(server) == 5
    run(conn, tmp_path, temperature=0.7, cache_nondeterministic=True)
    _, xcom = run(conn, tmp_path, temperature=0.7, cache_nondeterministic=True)
    assert xcom["cached"] is True and sent(server) == 6


def test_an_output_schema_hit_returns_the_validated_value_and_a_changed_schema_misses(server, make_conn, tmp_path):
    conn = make_conn("cache_d", server.url)
    first, _ = run(conn, tmp_path, temperature=0, output_schema=SCHEMA)
    assert sent(server) >= 1
    before = sent(server)
    second, xcom = run(conn, tmp_path, temperature=0, output_schema=SCHEMA)
    assert xcom["cached"] is True and second == first and sent(server) == before
    other = {**SCHEMA, "properties": {**SCHEMA["properties"], "note": {"type": "string"}}}
    _, xcom = run(conn, tmp_path, temperature=0, output_schema=other)
    assert xcom["cached"] is False and sent(server) > before


def test_cache_modes(server, make_conn, tmp_path):
    conn = make_conn("cache_e", server.url)
    _, xcom = run(conn, tmp_path, temperature=0, cache_mode="read_only")
    assert xcom["cached"] is False and not any(tmp_path.iterdir())  # read_only stores nothing
    run(conn, tmp_path, temperature=0)
    _, xcom = run(conn, tmp_path, temperature=0, cache_mode="refresh")  # sends, and overwrites
    assert xcom["cached"] is False and sent(server) == 3
    _, xcom = run(conn, tmp_path, temperature=0, cache_mode="read_only")
    assert xcom["cached"] is True and sent(server) == 3


def test_a_deferrable_task_with_a_hit_does_not_defer(server, make_conn, tmp_path):
    conn = make_conn("cache_f", server.url)
    first, _ = run(conn, tmp_path, temperature=0)
    second, xcom = run(conn, tmp_path, temperature=0, deferrable=True)  # TaskDeferred would be raised otherwise
    assert second == first and xcom["cached"] is True and sent(server) == 1


def test_python_tools_are_never_cached(server, make_conn, tmp_path):
    calls = []

    def lookup(q: str) -> str:
        """Look something up (a side effect a cached answer would skip)."""
        calls.append(q)
        return "found"

    conn = make_conn("cache_g", server.url)
    run(conn, tmp_path, temperature=0, tools=[lookup])
    _, xcom = run(conn, tmp_path, temperature=0, tools=[lookup])
    assert "cached" not in xcom and not any(tmp_path.iterdir())
    assert sent(server) >= 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cache_mode": "always"}, "cache_mode"),
        ({"cache_ttl": -5}, "cache_ttl"),
        ({"cache_nondeterministic": "yes"}, "cache_nondeterministic"),
        ({"cache_path": 42}, "cache_path"),
    ],
)
def test_bad_cache_arguments_fail_when_the_dag_is_parsed(kwargs, field):
    kwargs.setdefault("cache_path", "/tmp/cache")
    with pytest.raises(ValueError, match=field):
        AgentChatCompletionOperator(task_id="t", prompt="x", **kwargs)
