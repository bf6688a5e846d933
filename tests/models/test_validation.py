"""From input to a validated request (models/validation.py): one ``(field, rule)`` per field, never the value."""

from __future__ import annotations

import pytest

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.models import build_request
from airflow_agentchat.models.validation import build_fields

SECRET_PROMPT = "my private medical question"


def test_errors_name_each_field_once_and_never_quote_the_input():
    with pytest.raises(InvalidRequestError) as caught:
        build_request([{"role": "user", "content": SECRET_PROMPT, "name": 5}], temperature="hot", n=0)
    fields = [field for field, _ in caught.value.errors]
    assert sorted(fields) == ["messages[0].name", "n", "temperature"]
    assert SECRET_PROMPT not in str(caught.value) and "hot" not in str(caught.value)


def test_a_lone_surrogate_is_named_by_its_path():
    with pytest.raises(InvalidRequestError) as caught:
        build_request([{"role": "user", "content": "ok"}, {"role": "user", "content": "bad \ud800"}])
    assert caught.value.errors == [
        ("messages[1].content", "holds a lone surrogate (e.g. \\ud800): not valid Unicode, cannot be sent")
    ]


def test_shared_fields_are_checked_without_messages():
    assert build_fields(temperature=0.5).temperature == 0.5
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        build_fields(max_tokens=-1)
