"""request_body.py: JSON text inputs, the order of the messages, and ``request=`` merging with its field checks."""

from __future__ import annotations

import pytest

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.request_body import compose_messages, load_json, merge_request


def test_json_text_is_parsed_and_bad_json_names_the_field_and_the_line():
    assert load_json("request", '{"temperature": 0.2}') == {"temperature": 0.2}
    assert load_json("request", {"n": 1}) == {"n": 1}
    with pytest.raises(InvalidRequestError) as caught:
        load_json("messages", '[{"role": "user",\n "content": }]')
    [(field, rule)] = caught.value.errors
    assert field == "messages" and rule.startswith("not valid JSON") and "line 2" in rule


def test_system_prompt_first_then_the_conversation_then_the_prompt():
    messages = compose_messages(
        prompt="and now?", system_prompt="Be brief.", messages=[{"role": "user", "content": "hi"}]
    )
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "and now?"},
    ]


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({}, "give a prompt, messages, or a request with messages"),
        ({"messages": "hello"}, "must be a list of message objects"),
    ],
)
def test_no_message_or_messages_that_are_not_a_list_are_refused(kwargs, rule):
    with pytest.raises(InvalidRequestError) as caught:
        compose_messages(**kwargs)
    assert caught.value.errors == [("messages", rule)]


def test_keywords_override_the_request_and_extra_bodies_merge():
    body = merge_request(
        {"messages": [{"role": "user", "content": "dropped"}], "temperature": 0.9, "extra_body": {"a": 1, "b": 1}},
        {"temperature": 0.1, "top_p": None, "extra_body": {"b": 2}},
    )
    assert body == {"temperature": 0.1, "extra_body": {"a": 1, "b": 2}}


def test_an_unknown_request_field_is_refused_with_a_suggestion():
    with pytest.raises(InvalidRequestError) as caught:
        merge_request({"temprature": 0.2}, {})
    [(field, rule)] = caught.value.errors
    assert field == "request.temprature" and "did you mean 'temperature'?" in rule and "extra_body" in rule


def test_extra_body_must_be_an_object():
    with pytest.raises(InvalidRequestError, match="extra_body: must be an object of extra body fields, got list"):
        merge_request(None, {"extra_body": ["x"]})
