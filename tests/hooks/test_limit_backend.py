"""The Redis side of one limit per agent (hooks/limit_backend.py): a redis connection becomes a URL, and its
errors never show the password. No Redis server is needed for this."""

from __future__ import annotations

import pytest


def test_the_redis_connection_becomes_a_url_without_showing_its_password():
    from airflow.sdk import Connection

    from airflow_agentchat.exceptions import AgentChatError
    from airflow_agentchat.hooks.limit_backend import RedisWindow, redis_url

    conn = Connection(
        conn_id="r", conn_type="redis", host="redis.internal", port=6380, password="p@ss", extra='{"db": 2}'
    )
    url, where = redis_url(conn)
    assert url == "redis://:p%40ss@redis.internal:6380/2" and where == "redis.internal:6380"
    error = RedisWindow(url, where, "r", "agentchat:limit:x", 600).error(OSError(f"cannot reach {url}, auth p@ss"))
    assert (
        "p%40ss" not in str(error)
        and "p@ss" not in str(error)
        and "'r'" in str(error)
        and "redis.internal:6380" in str(error)
    )
    with pytest.raises(AgentChatError, match="extra 'db' must be a database number"):
        redis_url(Connection(conn_id="r", conn_type="redis", host="h", extra='{"db": "two"}'))
