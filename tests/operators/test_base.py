"""What the single and the batch operator share (operators/base.py): body fields given as keywords, as JSON text
after templating, or under ``request=``; the rendered ``cache_prompt``; and template files named by the DAG only."""

from __future__ import annotations

import jinja2
import pytest

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator
from airflow_agentchat.operators.base import _template_file


def operator(**kwargs) -> AgentChatCompletionOperator:
    return AgentChatCompletionOperator(task_id="t", prompt="x", **kwargs)


def test_keywords_override_the_request_and_unset_ones_are_left_out():
    params = operator(temperature=0.1, seed=7).body_params({"temperature": 0.9, "top_p": 0.5})
    assert params == {"temperature": 0.1, "seed": 7, "top_p": 0.5}


def test_json_text_a_template_rendered_is_parsed_and_bad_json_is_named():
    tools = '[{"type": "function", "function": {"name": "f", "parameters": {}}}]'
    assert operator(tools=tools, metadata='{"team": "ops"}').body_params()["metadata"] == {"team": "ops"}
    assert operator(stop="[/INST]").body_params()["stop"] == "[/INST]"  # a stop sequence is text, not JSON
    with pytest.raises(InvalidRequestError) as caught:
        operator(logit_bias="{broken").body_params()
    assert caught.value.errors[0][0] == "logit_bias"


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("5m", "5m"), ("1h", "1h")])
def test_cache_prompt_is_5m_1h_or_nothing(value, expected):
    assert operator(cache_prompt=value).prompt_cache_ttl() == expected


def test_a_cache_prompt_a_template_rendered_badly_is_named():
    op = operator(cache_prompt="5m")
    op.cache_prompt = "{{ params.ttl }}"  # as rendered from upstream data that held a template
    with pytest.raises(InvalidRequestError, match="cache_prompt"):
        op.prompt_cache_ttl()


def test_only_a_file_in_the_search_path_is_read_as_a_template(tmp_path):
    (tmp_path / "request.json").write_text('{"temperature": {{ params.t }}}')
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(tmp_path))
    assert _template_file("request.json", env) == '{"temperature": {{ params.t }}}'
    assert _template_file("notes.json", env) is None  # no such file: the text stays text
    assert _template_file("{{ conn.x.password }} notes.json", env) is None
    assert _template_file("request.txt", env) is None
