"""The strict request (models/request.py): per-message role rules, cross-field rules, and the body it sends."""

from __future__ import annotations

import json

import pytest

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.models import build_request

USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("message", "field", "rule"),
    [
        ({"role": "tool", "content": "42"}, "messages[0]", "tool messages need tool_call_id"),
        ({"role": "user", "content": "x", "tool_call_id": "c1"}, "messages[0]", "only allowed on tool messages"),
        ({"role": "user", "content": "x", "refusal": "no"}, "messages[0]", "refusal is only allowed on assistant"),
        ({"role": "user"}, "messages[0]", "content is required"),
        ({"role": "robot", "content": "x"}, "messages[0].role", "Input should be"),
    ],
)
def test_message_rules_name_the_message(message, field, rule):
    with pytest.raises(InvalidRequestError) as caught:
        build_request([message])
    assert any(f == field and rule in r for f, r in caught.value.errors), caught.value.errors


@pytest.mark.parametrize(
    ("params", "rule"),
    [
        ({"top_logprobs": 2}, "top_logprobs requires logprobs=true"),
        ({"stream_options": {"include_usage": True}}, "stream_options is only allowed with stream=true"),
        ({"tool_choice": "required"}, "tool_choice='required' needs tools"),
        ({"extra_body": {"temperature": 1}}, "extra_body must not repeat named fields: temperature"),
        ({"logit_bias": {"hello": 1}}, "keys must be token ids (digits), got 'hello'"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "at most 16 key-value pairs, got 17"),
    ],
)
def test_cross_field_and_field_rules(params, rule):
    with pytest.raises(InvalidRequestError) as caught:
        build_request(USER, **params)
    assert any(rule in r for _, r in caught.value.errors), caught.value.errors


def test_the_body_holds_what_was_set_with_extra_body_merged_in():
    request = build_request(USER, temperature=0.2, extra_body={"k_retrieval": 3})
    body = json.loads(request.to_json())
    assert body == {"model": "agent", "messages": USER, "temperature": 0.2, "k_retrieval": 3}
    assert request.to_body() == body
