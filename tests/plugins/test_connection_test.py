"""The connection-test guard (plugins/connection_test.py): which fields move the stored key, and when the stored
key may be used."""

from __future__ import annotations

import json

import pytest


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
