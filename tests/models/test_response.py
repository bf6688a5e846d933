"""The lenient response model (models/response.py): cache usage is parsed and kept, and the content filter is an
error of its own kind keeping the text."""

from __future__ import annotations

import json

import pytest

from airflow_agentchat.exceptions import AgentChatError, ContentFilterError
from airflow_agentchat.models import (
    ChatCompletion,
)


def test_cache_usage_is_parsed_and_kept():
    usage = {
        "prompt_tokens": 1200,
        "completion_tokens": 10,
        "total_tokens": 1210,
        "cache_created_input_tokens": 0,
        "cache_read_input_tokens": 1024,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    }
    completion = ChatCompletion.model_validate({"choices": [], "usage": usage})
    assert completion.usage is not None and completion.usage.cache_read_input_tokens == 1024
    assert completion.usage_dict() == usage
    plain = ChatCompletion.model_validate({"usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
    assert plain.usage_dict() == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}


def _answer(finish: str, text: str | None = "Echo:") -> ChatCompletion:
    completion = ChatCompletion.model_validate(
        {
            "choices": [
                {"index": 0, "message": {"content": "fine"}, "finish_reason": "stop"},
                {"index": 1, "message": {"content": text}, "finish_reason": finish},
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    )
    completion._meta = {"request_id": "req_1"}
    return completion


def test_content_filter_is_an_error_of_its_own_kind_keeping_the_text():
    assert _answer("stop").content_filter_error() is None
    _answer("length").raise_for_content_filter()
    with pytest.raises(ContentFilterError) as caught:
        _answer("content_filter", "Partial").raise_for_content_filter()
    error = caught.value
    assert error.kind == "content_filter" and not error.retryable
    assert (error.text, error.index, error.request_id) == ("Partial", 1, "req_1")
    assert error.usage == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert "content filter" in str(error) and "req_1" in str(error)
    again = AgentChatError.from_dict(json.loads(json.dumps(error.to_dict())))
    assert isinstance(again, ContentFilterError)
    assert (again.text, again.index, again.request_id, str(again)) == ("Partial", 1, "req_1", str(error))
