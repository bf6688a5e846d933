"""The managed-agent hook without common.ai (Python 3.10, or the extra not installed), and its registration."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_WITHOUT_COMMON_AI = textwrap.dedent(
    """
    import sys

    class Block:  # common.ai's contract is "not installed" (its provider metadata may still be discovered)
        def find_spec(self, name, path=None, target=None):
            if name.startswith(("airflow.providers.common.ai.managed_agents", "airflow.providers.common.ai.exc")):
                raise ModuleNotFoundError(name)

    sys.meta_path.insert(0, Block())
    import airflow_agentchat.operators.agent_chat  # the operators never import the hook module
    assert "airflow_agentchat.hooks.managed_agent" not in sys.modules
    from airflow_agentchat.hooks.agent_chat import AgentChatHook
    from airflow_agentchat.hooks.managed_agent import AgentChatManagedAgentHook

    assert issubclass(AgentChatManagedAgentHook, AgentChatHook)
    try:
        AgentChatHook("any").agent("support")
    except Exception as exc:
        print(type(exc).__name__, exc)
    """
)


def test_without_common_ai_the_provider_imports_and_says_what_is_missing() -> None:
    run = subprocess.run([sys.executable, "-c", _WITHOUT_COMMON_AI], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "pip install 'airflow-agentchat[common-ai]'" in run.stdout


def test_the_connection_type_gives_the_managed_agent_hook(devserver, make_conn) -> None:
    from airflow.sdk import BaseHook

    from airflow_agentchat.hooks.managed_agent import AgentChatManagedAgentHook

    make_conn("ma_registered", devserver.url)
    hook = BaseHook.get_hook("ma_registered")
    assert isinstance(hook, AgentChatManagedAgentHook)
    assert hook.agent_platform == "digitalocean.gradient_agent"
