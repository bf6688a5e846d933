"""Agent Chat pieces that need no API server: the plugin's import cost, the connection listing, the snippet."""

from __future__ import annotations

import json

import pytest
from fakes import Imported, import_in_fresh_python

from airflow_agentchat.plugins.chat import _env_connections, operator_snippet, public_endpoint


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


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("https://user:sk-secret@agent.example/api/v1/", "https://agent.example/api/v1"),
        ("agent.example", "https://agent.example"),
        ("http://127.0.0.1:8088?key=sk-secret", "http://127.0.0.1:8088"),
        ("", ""),
    ],
)
def test_public_endpoint_never_carries_credentials(host: str, expected: str) -> None:
    assert public_endpoint(host) == expected


def test_env_connections_only_agentchat_and_no_secrets() -> None:
    environ = {
        "AIRFLOW_CONN_A": json.dumps(
            {"conn_type": "agentchat", "host": "https://u:pw-1234@a.example", "password": "k"}
        ),
        "AIRFLOW_CONN_B": "agentchat://:sk-uri-key@b.example",
        "AIRFLOW_CONN_C": json.dumps({"conn_type": "http", "host": "c.example"}),
        "AIRFLOW_CONN_D": "{broken",
        "OTHER": "x",
    }
    found = {c["conn_id"]: c for c in _env_connections(environ)}
    assert set(found) == {"a", "b"}
    assert found["a"]["endpoint"] == "https://a.example" and found["a"]["has_key"] is True
    assert "sk-uri-key" not in json.dumps(found) and "pw-1234" not in json.dumps(found)


def test_operator_snippet_general_conversation() -> None:
    request = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "stop": ["\n\n"],
        "extra_body": {"custom": True},
    }
    snippet = operator_snippet("my_conn", request)
    namespace: dict[str, object] = {}
    exec(snippet.split("\n", 2)[2].replace("AgentChatCompletionOperator(", "dict("), namespace)
    assert namespace["ask_agent"] == {"task_id": "ask_agent", "agentchat_conn_id": "my_conn", **request}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"conn_type": "agentchat", "connection_id": "a", "port": 0}, {"conn_type": "agentchat", "connection_id": "a"}),
        ({"conn_type": "agentchat", "connection_id": "a", "port": 443}, None),  # a real port is another endpoint
        ({"conn_type": "agentchat", "connection_id": "a", "port": False}, None),
        ({"conn_type": "agentchat", "connection_id": "a"}, None),
        ({"conn_type": "http", "connection_id": "h", "port": 0}, None),  # other providers' connections untouched
    ],
)
def test_connection_test_body_loses_only_the_ui_port_zero(body: dict, expected: dict | None) -> None:
    from airflow_agentchat.plugins.connection_test import without_port_zero

    fixed = without_port_zero(json.dumps(body).encode())
    assert (None if fixed is None else json.loads(fixed)) == expected
    assert without_port_zero(b"{not json") is None


def test_operator_snippet_nests_long_literals_by_four_spaces() -> None:
    """A ``tools=`` list too long for one line is laid out one item per line, each level 4 spaces deeper."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city, in degrees Celsius",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    snippet = operator_snippet("c", {"messages": [{"role": "user", "content": "weather?"}], "tools": tools})
    body = snippet.split("(\n", 1)[1].rsplit(")", 1)[0]
    indents = [len(line) - len(line.lstrip(" ")) for line in body.splitlines()]
    assert all(n % 4 == 0 for n in indents), snippet
    assert max(indents) >= 16 and max(len(line) for line in snippet.splitlines()) <= 100, snippet
    namespace: dict[str, object] = {}
    exec(snippet.split("\n", 2)[2].replace("AgentChatCompletionOperator(", "dict("), namespace)
    assert namespace["ask_agent"]["tools"] == tools


STORED = {
    "conn_type": "agentchat",
    "host": "agent.example",
    "port": None,
    "schema": None,
    "extra": '{"verify": "false"}',
}


@pytest.mark.parametrize(
    ("body", "changed"),
    [
        ({}, []),  # every field left out keeps its stored value
        ({"host": "agent.example", "schema": "", "port": None, "extra": '{"verify": "false", "model": "m2"}'}, []),
        ({"extra": '{"verify": false, "timeout": 5}'}, []),  # false and "false" are the same setting
        ({"extra": '{"verify": "***"}'}, []),  # a masked value is the stored one
        (
            {"schema": "http", "extra": '{"verify": "false", "allow_insecure_http": true}'},
            ["schema", "extra.allow_insecure_http"],
        ),
        ({"extra": "{}"}, ["extra.verify"]),  # even towards the safer default: what is tested is what is stored
        ({"extra": '{"verify": "false", "ca_bundle": "/x.pem"}'}, ["extra.ca_bundle"]),
        ({"extra": '{"verify": "false", "proxy": "http://p"}'}, ["extra.proxy"]),  # unknown extras count
        ({"extra": "not json"}, ["extra.(extra)", "extra.verify"]),
        ({"host": "evil.example", "port": 8443, "conn_type": "http"}, ["conn_type", "host", "port"]),
    ],
)
def test_transport_changes_name_every_field_that_moves_the_stored_key(body: dict, changed: list[str]) -> None:
    from airflow_agentchat.plugins.connection_test import transport_changes

    assert transport_changes(body, STORED) == changed


def test_uses_stored_key_only_without_a_key_of_the_testers_own() -> None:
    from airflow_agentchat.plugins.connection_test import uses_stored_key

    assert uses_stored_key({"connection_id": "c"}) and uses_stored_key({"connection_id": "c", "password": "***"})
    assert not uses_stored_key({"connection_id": "c", "password": "sk-own"})
    assert not uses_stored_key({"connection_id": "c", "password": None})  # Airflow clears the key then
    assert not uses_stored_key({"password": "***"})


def test_every_connection_field_is_classified_for_the_test_guard() -> None:
    """A new connection extra must be sorted: harmless, or compared with the stored one before a test uses the key."""
    from airflow_agentchat.get_provider_info import get_provider_info
    from airflow_agentchat.plugins.connection_test import HARMLESS_EXTRAS

    (conn_type,) = get_provider_info()["connection-types"]
    assert set(conn_type["conn-fields"]) - HARMLESS_EXTRAS == {"verify", "ca_bundle", "allow_insecure_http"}


def test_page_limits_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_agentchat.plugins.limits import PageLimits

    monkeypatch.delenv("AIRFLOW__AGENTCHAT__PAGE_CHATS_PER_USER", raising=False)
    monkeypatch.delenv("AIRFLOW__AGENTCHAT__PAGE_CHAT_TIMEOUT", raising=False)
    assert PageLimits.from_config() == PageLimits(4, 300.0)
    monkeypatch.setenv("AIRFLOW__AGENTCHAT__PAGE_CHATS_PER_USER", "2")
    monkeypatch.setenv("AIRFLOW__AGENTCHAT__PAGE_CHAT_TIMEOUT", "7.5")
    assert PageLimits.from_config() == PageLimits(2, 7.5)
    for per_user, timeout in (("0", "5"), ("many", "5"), ("2", "-1")):
        monkeypatch.setenv("AIRFLOW__AGENTCHAT__PAGE_CHATS_PER_USER", per_user)
        monkeypatch.setenv("AIRFLOW__AGENTCHAT__PAGE_CHAT_TIMEOUT", timeout)
        with pytest.raises(ValueError, match=r"\[agentchat\] page_chats_per_user must be a whole number >= 1"):
            PageLimits.from_config()


def test_chat_slots_bound_each_user_apart() -> None:
    from airflow_agentchat.plugins.limits import ChatSlots

    slots = ChatSlots(2)
    assert slots.take("a") and slots.take("a") and not slots.take("a")
    assert slots.take("b")
    slots.give_back("a")
    assert slots.in_flight("a") == 1 and slots.take("a")
