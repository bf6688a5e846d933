"""Each argument rule in one place: the DAG import and ``execute`` give the same verdict in the same words."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fakes import Imported, import_in_fresh_python

from airflow_agentchat import arguments
from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator
from airflow_agentchat.structured_output import OutputSpec
from airflow_agentchat.tools import PythonTool

SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}}


def _tool_named(name: str):
    def tool(x: str) -> str:
        """A tool."""
        return x

    tool.__name__ = name
    return tool


@pytest.mark.parametrize("name", ["t" * 65, "t" * 70, "café", "has space", "dot.ted"])
def test_a_tool_name_the_reference_refuses_fails_when_the_dag_is_parsed(name):
    with pytest.raises(ValueError, match="1-64 letters"):
        AgentChatCompletionOperator(task_id="t", prompt="x", tools=[_tool_named(name)])
    with pytest.raises(ValueError, match="1-64 letters"):  # the same rule when the toolbox is built
        PythonTool.from_callable(_tool_named(name))


@pytest.mark.parametrize("name", ["t" * 64, "lookup-order", "Get_2"])
def test_a_tool_name_the_reference_allows_passes(name):
    AgentChatCompletionOperator(task_id="t", prompt="x", tools=[_tool_named(name)])
    assert PythonTool.from_callable(_tool_named(name)).name == name


def test_the_decorator_checks_tool_names_at_parse_time_too():
    from airflow.sdk import DAG

    from airflow_agentchat.decorators.agent_chat import agent_chat_task

    with DAG(dag_id="names", schedule=None), pytest.raises(ValueError, match="'café'"):

        @agent_chat_task(tools=[_tool_named("café")])
        def ask() -> str:
            return "x"

        ask()


@pytest.mark.parametrize(
    ("kwargs", "field", "problem"),
    [
        ({"output_strategy": "regex"}, "output_strategy", arguments.output_strategy("regex")),
        ({"output_retries": -1}, "output_retries", arguments.output_retries(-1)),
    ],
)
def test_output_rules_say_the_same_at_parse_time_and_in_structured_output(kwargs, field, problem):
    assert problem is not None
    with pytest.raises(ValueError, match=f"{field} {problem}".replace("(", r"\(").replace(")", r"\)")):
        AgentChatCompletionOperator(task_id="t", prompt="x", output_schema=SCHEMA, **kwargs)
    build = {"strategy": kwargs.get("output_strategy", "auto"), "retries": kwargs.get("output_retries", 2)}
    with pytest.raises(InvalidRequestError) as info:
        OutputSpec.build(SCHEMA, **build)
    assert info.value.errors == [(field, problem)]


def test_n_must_be_1_for_review_at_parse_time_and_after_rendering():
    with pytest.raises(ValueError, match=r"n must be 1 with require_approval"):
        AgentChatCompletionOperator(task_id="t", prompt="x", require_approval=True, n=2)
    templated = AgentChatCompletionOperator(task_id="t", prompt="x", require_approval="{{ params.r }}", n=2)
    templated.require_approval = "true"  # as rendered
    with pytest.raises(InvalidRequestError, match="n: must be 1 with require_approval"):
        templated.prepare()


def test_review_needs_text_output_at_parse_time_and_after_rendering():
    with pytest.raises(ValueError, match="require_approval reviews the answer"):
        AgentChatCompletionOperator(task_id="t", prompt="x", require_approval="True", output="message")
    templated = AgentChatCompletionOperator(task_id="t", prompt="x", require_approval="{{ x }}", output="message")
    templated.require_approval = "True"
    with pytest.raises(InvalidRequestError, match="require_approval: reviews the answer"):
        templated.prepare()


def test_approval_timeout_is_one_rule():
    assert arguments.approval_timeout(90) == timedelta(seconds=90)
    assert arguments.approval_timeout(None) is None
    operator = AgentChatCompletionOperator(task_id="t", prompt="x", approval_timeout=30)
    assert operator.approval_timeout == timedelta(seconds=30)
    for bad in (0, -1, True, "30", timedelta(0)):
        with pytest.raises(ValueError, match="approval_timeout must be a timedelta or seconds > 0"):
            AgentChatCompletionOperator(task_id="t", prompt="x", approval_timeout=bad)


def test_the_rules_module_is_cheap_to_import():
    """Parsed with every DAG: nothing heavy, nothing from the rest of the package."""
    imported = import_in_fresh_python("import airflow_agentchat.arguments", after="")
    new = Imported.matching(imported.new, ("pydantic", "httpx", "airflow"))
    assert new in ([], ["airflow_agentchat", "airflow_agentchat.arguments"])
