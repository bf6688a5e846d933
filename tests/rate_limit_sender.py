"""A sender in a process of its own, as a task on another worker is (``main(spec)``, or the command line).

SPEC is JSON: ``conn_id``, ``start_at`` (epoch: every sender starts together, after its imports),
``seconds``, optional ``count``, ``concurrency``, ``stream``, ``sync``, ``order``. Reports ``order``, ``sent``
and ``error`` (the kind and message of the error that stopped it, if any).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


def warm() -> None:
    """Import what the first request imports (a worker's task has it loaded; a fork inherits it)."""
    import httpx_aiohttp  # noqa: F401
    import limits.aio.storage
    import limits.aio.strategies
    import limits.storage  # noqa: F401
    import redis.asyncio  # noqa: F401

    import airflow_agentchat.hooks.sending
    import airflow_agentchat.models
    import airflow_agentchat.streaming  # noqa: F401


def main(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow_agentchat.exceptions import AgentChatError
    from airflow_agentchat.hooks.agent_chat import AgentChatHook

    hook = AgentChatHook(spec["conn_id"], max_retries=spec.get("max_retries", 0))
    hook.settings  # noqa: B018 - read the connection before the start line
    warm()
    count, sent = spec.get("count"), 0
    time.sleep(max(0.0, spec["start_at"] - time.time()))
    stop = time.monotonic() + spec["seconds"]

    def more() -> bool:
        return time.monotonic() < stop and (count is None or sent < count)

    async def worker() -> None:
        nonlocal sent
        while more():
            sent += 1
            messages = [{"role": "user", "content": f"{spec.get('prompt', 'limited')} {sent}"}]
            if spec.get("stream"):
                async for _ in hook.astream_chat_completion(messages):
                    pass
            else:
                await hook.acreate_chat_completion(messages)

    async def run() -> None:
        try:
            await asyncio.gather(*(worker() for _ in range(spec.get("concurrency", 6))))
        finally:
            await hook.aclose()

    try:
        if spec.get("sync"):
            while more():
                sent += 1
                hook.create_chat_completion([{"role": "user", "content": f"sync {sent}"}])
        else:
            asyncio.run(run())
    except AgentChatError as exc:
        return {"order": spec.get("order", 0), "sent": sent, "error": {"kind": exc.kind, "message": str(exc)}}
    return {"order": spec.get("order", 0), "sent": sent, "error": None}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
