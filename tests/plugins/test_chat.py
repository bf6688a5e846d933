"""What the Agent Chat page needs besides routes (plugins/chat.py): the connection listing without secrets, public
endpoints without credentials, the operator snippet."""

from __future__ import annotations

import json

import pytest

from airflow_agentchat.plugins.chat import _env_connections, operator_snippet, public_endpoint


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
