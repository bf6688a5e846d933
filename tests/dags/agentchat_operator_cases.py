"""One DAG with a task per operator feature; integration/test_operator.py runs it once and checks every task's XCom."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    },
}

with DAG(
    dag_id="agentchat_operator_cases",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule="@daily",
    catchup=False,
    params={"team": "ops", "who": "Ada"},
):
    AgentChatCompletionOperator(task_id="jinja_prompt", prompt="Hello {{ params.who }}, today is {{ ds }}")
    AgentChatCompletionOperator(task_id="messages_file", messages="case_templates/messages.json.j2")
    AgentChatCompletionOperator(task_id="request_file", request="case_templates/request.json", temperature=0.1)
    AgentChatCompletionOperator(
        task_id="request_dict",
        request={"model": "dict-model", "messages": [{"role": "user", "content": "from dict"}], "max_tokens": 2},
        prompt="and a follow-up",
    )
    AgentChatCompletionOperator(task_id="n_two", prompt="twice", n=2)
    AgentChatCompletionOperator(
        task_id="text_like_a_file", prompt="Describe the fields of orders.json for {{ params.team }}", stop="[/INST]"
    )
    AgentChatCompletionOperator(task_id="output_message", prompt="message please", output="message")
    AgentChatCompletionOperator(task_id="output_response", prompt="response please", output="response")
    AgentChatCompletionOperator(
        task_id="tools_message", prompt="use the tool", tools=[TOOL], tool_choice="required", output="message"
    )
    AgentChatCompletionOperator(
        task_id="streamed", prompt="stream this answer", stream=True, stream_options={"include_usage": True}
    )
    AgentChatCompletionOperator(task_id="deferred", prompt="wait in the triggerer", deferrable=True)
    AgentChatCompletionOperator(
        task_id="do_extras",
        prompt="with extras",
        include_retrieval_info=True,
        include_guardrails_info=True,
        output="response",
    )

    @task
    def make_prompt() -> str:
        return "prompt from an upstream task"

    @task.agent_chat(system_prompt="Be brief.")
    def decorated(text: str) -> str:
        return f"Decorated: {text}"

    @task.agent_chat(deferrable=True)
    def decorated_deferred(text: str) -> str:
        return f"Deferred: {text}"

    AgentChatCompletionOperator(task_id="xcom_prompt", prompt=make_prompt())
    decorated(make_prompt())
    decorated_deferred(make_prompt())
