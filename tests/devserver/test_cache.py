"""The dev server's prompt cache (devserver/cache.py): a cached prefix is written once and read within its
lifetime, seen through the official ``openai`` SDK (an independent client)."""

from __future__ import annotations

import openai

from airflow_agentchat.devserver import DevServer

SHARED = ("You label support tickets. " * 30).strip()
SYSTEM = {"role": "system", "content": [{"type": "text", "text": SHARED, "cache_control": {"type": "ephemeral"}}]}


def test_the_same_cached_prefix_is_read_within_its_lifetime(server: DevServer, client: openai.OpenAI) -> None:
    def ask(prompt: str, system: dict = SYSTEM) -> dict:
        answer = client.chat.completions.create(
            model="m",
            messages=[system, {"role": "user", "content": prompt}],  # type: ignore[list-item]
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = [chunk.usage for chunk in answer if chunk.usage is not None]
        return usage[-1].model_dump()

    prefix = 30 * 4 + 1  # the system text's tokens plus one
    first = ask("ticket one")
    assert first["prompt_tokens"] == prefix + 3
    assert (first["cache_created_input_tokens"], first["cache_read_input_tokens"]) == (prefix, 0)
    assert first["cache_creation"] == {"ephemeral_5m_input_tokens": prefix, "ephemeral_1h_input_tokens": 0}
    second = ask("ticket two, longer")
    assert (second["cache_created_input_tokens"], second["cache_read_input_tokens"]) == (0, prefix)
    assert second["prompt_tokens"] == prefix + 4
    hour = {
        "role": "system",
        "content": [
            {**SYSTEM["content"][0], "text": "Other rules.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
    }
    third = ask("ticket three", hour)
    assert third["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 3}
    server.reset()  # the cache goes with the rest of the server's state
    assert ask("ticket four")["cache_created_input_tokens"] == prefix
