"""Tool calls answered by a Python task, then the final answer.

1. ``plan`` offers the agent a function and asks it to call it (``output="message"`` returns the assistant
   message with its ``tool_calls``);
2. ``run_tools`` executes each call in Python and returns the conversation with the tool results;
3. ``answer`` sends that conversation back for the final text.
"""

from __future__ import annotations

import json

import pendulum
from airflow.sdk import DAG, task

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

QUESTION = "How many orders did the EU region ship yesterday?"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "count_orders",
            "description": "Count shipped orders for a region on a day.",
            "parameters": {
                "type": "object",
                "properties": {
                    "region": {"type": "string", "enum": ["EU", "US", "APAC"]},
                    "day": {"type": "string", "description": "ISO date"},
                },
                "required": ["region", "day"],
            },
        },
    }
]


def count_orders(region: str, day: str) -> dict:
    """Stand-in for a warehouse query."""
    return {"region": region, "day": day, "orders": {"EU": 1284, "US": 2210, "APAC": 877}.get(region, 0)}


with DAG(
    dag_id="example_agentchat_tools",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    tags=["agentchat", "example"],
):
    plan = AgentChatCompletionOperator(
        task_id="plan",
        prompt=QUESTION,
        tools=TOOLS,
        tool_choice="required",
        output="message",
    )

    @task
    def run_tools(message: dict) -> list[dict]:
        """Execute every tool call of the assistant message; return the conversation to continue."""
        conversation = [{"role": "user", "content": QUESTION}, message]
        for call in message.get("tool_calls") or []:
            arguments = json.loads(call["function"]["arguments"] or "{}")
            result = count_orders(**arguments)
            conversation.append({"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)})
        return conversation

    answer = AgentChatCompletionOperator(
        task_id="answer",
        messages=run_tools(plan.output),
        tools=TOOLS,
    )
