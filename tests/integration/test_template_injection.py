"""Finding: upstream data rendered as a template leaked the access key. A real ``airflow dags test`` run against
a scripted server that records every request body."""

from __future__ import annotations

import json

import pytest

HOSTILE = "{{ conn.agentchat_default.password }} notes.json"


def _reply(recorded) -> tuple[int, dict, bytes]:
    body = json.loads(recorded.body)
    last = body["messages"][-1]["content"]
    texts = [HOSTILE, HOSTILE] if last == "INJECT" else [f"Echo: {last}"] * (body.get("n") or 1)
    choices = [
        {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        for i, text in enumerate(texts)
    ]
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    return 200, {"content-type": "application/json"}, json.dumps({"choices": choices, "usage": usage}).encode()


@pytest.fixture(scope="module")
def injected(run_dag, scripted, canary_key):
    scripted.script()
    scripted.responder = _reply
    try:
        result = run_dag(
            "agentchat_template_injection",
            conn={"conn_type": "agentchat", "host": scripted.url, "password": canary_key},
        )
        bodies = [json.loads(r.body) for r in scripted.requests]
    finally:
        scripted.responder = None
    return result, bodies


def _last_user(bodies: list[dict]) -> list[str]:
    return [b["messages"][-1]["content"] for b in bodies]


def test_the_key_never_reaches_the_server(injected, canary_key):
    result, bodies = injected
    assert bodies, "no request reached the scripted server"
    assert not [b for b in bodies if canary_key in json.dumps(b)]
    assert canary_key not in result["_log"]


def test_mapped_values_arrive_as_literal_text(injected):
    _, bodies = injected
    prompts = _last_user(bodies)
    assert prompts.count(HOSTILE) == 3  # expand(prompt=rows()) once, the agent's two answers mapped
    assert f"Row: {HOSTILE}" in prompts  # @task.agent_chat(...).expand(...)


def test_what_the_author_wrote_is_still_a_template(injected):
    _, bodies = injected
    assert "Describe orders.json for ops" in _last_user(bodies)
    from_file = next(b for b in bodies if b["messages"][-1]["content"] == "and one more")
    assert from_file["messages"][0] == {"role": "system", "content": "You help the ops team."}
