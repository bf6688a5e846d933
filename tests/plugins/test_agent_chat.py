"""The Agent Chat plugin (plugins/agent_chat.py): its import is light, and it is registered by its entry point only."""

from __future__ import annotations

from fakes import Imported, import_in_fresh_python


def test_plugin_import_is_light_and_registers_app_and_view() -> None:
    """Every Airflow process imports plugins; FastAPI routes, models and the hook must wait for a request."""
    imported = import_in_fresh_python(
        "from airflow_agentchat.plugins.agent_chat import AgentChatPlugin as P",
        after="import airflow.plugins_manager",
        then="print(P.fastapi_apps[0]['url_prefix'], P.external_views[0]['href'])",
    )
    heavy = ("airflow_agentchat.plugins.app", "airflow_agentchat.models", "airflow_agentchat.hooks.agent_chat")
    assert Imported.matching(imported.loaded, heavy) == []
    assert imported.printed.split() == ["/agentchat", "/agentchat/"]


def test_plugin_is_registered_by_its_entry_point_only() -> None:
    """The ``airflow.plugins`` entry point loads the plugin; provider info must not list it a second time."""
    from importlib.metadata import entry_points

    from airflow_agentchat.get_provider_info import get_provider_info
    from airflow_agentchat.plugins.agent_chat import AgentChatPlugin

    (entry,) = [e for e in entry_points(group="airflow.plugins") if e.name == "agentchat"]
    assert entry.load() is AgentChatPlugin
    assert "plugins" not in get_provider_info()
