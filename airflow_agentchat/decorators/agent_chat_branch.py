"""``@task.agent_chat_branch``: a Python function builds the prompt, the agent picks the branch.

Like ``@task.agent_chat`` (the function returns a prompt, messages or a request dict), sent through
:class:`~airflow_agentchat.operators.branch.AgentChatBranchOperator`: the downstream tasks named in
``branches`` that the agent does not choose are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory

from airflow_agentchat.decorators.agent_chat import _AgentChatDecoratedOperator
from airflow_agentchat.operators.branch import AgentChatBranchOperator


class _AgentChatBranchDecoratedOperator(_AgentChatDecoratedOperator, AgentChatBranchOperator):
    """Calls the decorated function at run time, sends what it returns, and branches on the answer."""

    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, *AgentChatBranchOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = _AgentChatDecoratedOperator.template_fields_renderers
    custom_operator_name = "@task.agent_chat_branch"


def agent_chat_branch_task(python_callable: Callable | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function that returns a prompt (or messages, or a request) into an agent-chosen branch.

    Takes ``branches`` (``{"task_id": "when to choose it"}``), ``allow_multiple`` and every keyword of
    :class:`AgentChatCompletionOperator` (``system_prompt``, ``output_strategy``, ``agentchat_conn_id``, ...).
    """
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_AgentChatBranchDecoratedOperator,
        **kwargs,
    )
