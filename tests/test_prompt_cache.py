"""``cache_prompt`` (prompt_cache.py): the prefix every request of a task shares is marked, and checked."""

from __future__ import annotations

import pytest

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator


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
