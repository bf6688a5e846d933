"""A common.ai agent consults a DigitalOcean agent as one of its tools.

Airflow's common.ai provider runs an agent loop (pydantic-ai) that can call *managed agents* as tools. With the
``common-ai`` extra installed, an ``agentchat`` connection is such a managed agent:
``AgentChatHook("agentchat_default").agent("support")`` goes into common.ai's ``ManagedAgentToolset`` (or into
its ``FailoverManagedAgentClient`` with other agents).

The calling model here is pydantic-ai's offline ``TestModel`` (it calls every tool once, then answers with what
the tools returned), so the example runs without any LLM key; with a real model, hand the same toolset to
common.ai's ``AgentOperator(llm_conn_id=..., toolsets=[...])``. Without common.ai (Python 3.10, or the extra not
installed) the task is skipped and says why; the DAG itself parses either way (the imports are in the task).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

with DAG(
    dag_id="example_agentchat_common_ai",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    tags=["agentchat", "example", "common.ai"],
):

    @task
    def consult_support_agent() -> dict:
        """A calling agent asks the DO agent (over ``agentchat_default``) through common.ai's toolset."""
        try:
            from airflow.providers.common.ai.toolsets import ManagedAgentToolset
            from pydantic_ai import Agent
            from pydantic_ai.models.test import TestModel
        except ImportError as exc:
            try:  # Airflow >= 3.1 moved it to the task SDK
                from airflow.sdk.exceptions import AirflowSkipException
            except ImportError:
                from airflow.exceptions import AirflowSkipException
            raise AirflowSkipException(
                f"common.ai is not installed ({exc}): pip install 'airflow-agentchat[common-ai]' (Python >= 3.11)"
            ) from None

        from airflow_agentchat.hooks.agent_chat import AgentChatHook

        support = AgentChatHook("agentchat_default").agent("support")
        toolset = ManagedAgentToolset(
            support,
            tool_name="ask_support_agent",
            description="Answers questions about our orders and refunds.",
            timeout=60,  # the whole consultation, the hook's retries included
            vendor_options={"include_retrieval_info": True},
        )
        calling_agent = Agent(TestModel(), toolsets=[toolset])
        result = calling_agent.run_sync("A customer asks how refunds work. Consult the support agent.")
        return {"output": result.output, "tool_answer": toolset.invoke_sync("How do refunds work?")}

    consult_support_agent()
