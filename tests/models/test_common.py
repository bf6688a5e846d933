"""What every wire model shares (models/_common.py): the template-proof boolean and the default model name."""

from __future__ import annotations

import pytest

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.models import build_request

USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("true", True), (False, False), ("false", False)])
def test_a_boolean_or_the_text_a_template_renders_is_taken(value, expected):
    assert build_request(USER, stream=value).stream is expected


@pytest.mark.parametrize("value", ["yes", "on", "1", 1, "True"])
def test_other_truthy_values_are_refused_naming_the_rule(value):
    with pytest.raises(InvalidRequestError) as caught:
        build_request(USER, logprobs=value)
    assert caught.value.errors == [("logprobs", 'must be true or false (a boolean, or the text "true" / "false")')]


def test_the_model_name_is_always_sent():
    assert build_request(USER).to_body()["model"] == "agent"
    assert build_request(USER, model="gpt-x").to_body()["model"] == "gpt-x"
