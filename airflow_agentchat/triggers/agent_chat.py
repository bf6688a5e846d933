"""Deferrable mode: the triggerer waits for the agent's answer, so a slow agent does not hold a worker slot.

The trigger is serialized into the metadata DB, so its arguments hold only the connection id and the validated
request as JSON (``request.model_dump(mode="json", exclude_unset=True)``: ``extra_body`` stays apart, so one
validation restores it); the access key is read from the connection inside the triggerer. Events are plain
JSON dicts; an error event carries the error's ``to_dict()`` (kind, status, code, request id, message, attempts),
so the task raises the same class in deferrable mode as in direct mode.

The hook bounds every attempt (``attempt_deadline``) and the number of attempts, so a trigger ends; the
operator also defers with ``timeout=hook.request_deadline()``, after which Airflow fails the task even if the
triggerer itself is stuck.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class AgentChatCompletionTrigger(BaseTrigger):
    """Send one validated request from the triggerer and fire one event with the response or the error.

    :param body: the request as ``ChatCompletionRequest.model_dump(mode="json", exclude_unset=True)`` gives it.
    """

    def __init__(
        self,
        agentchat_conn_id: str,
        body: dict[str, Any],
        timeout: float | None = None,
        max_retries: int | None = None,
        fallback_conn_ids: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.agentchat_conn_id = agentchat_conn_id
        self.fallback_conn_ids = list(fallback_conn_ids or [])
        self.body = body
        self.timeout = timeout
        self.max_retries = max_retries

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "agentchat_conn_id": self.agentchat_conn_id,
                "body": self.body,
                "timeout": self.timeout,
                "max_retries": self.max_retries,
                "fallback_conn_ids": self.fallback_conn_ids,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_agentchat.exceptions import AgentChatError
        from airflow_agentchat.failover import fails_over
        from airflow_agentchat.hooks.agent_chat import AgentChatHook
        from airflow_agentchat.models import build_request

        order = [self.agentchat_conn_id, *self.fallback_conn_ids]
        for position, conn_id in enumerate(order):  # the same failover rule as the worker's (see failover.py)
            hook = AgentChatHook(conn_id, timeout=self.timeout, max_retries=self.max_retries)
            try:
                request = build_request(**self.body)
                completion = await hook.asend(request)
            except AgentChatError as exc:
                if position + 1 < len(order) and fails_over(exc):
                    self.log.warning(
                        "Connection %r failed for good (%s); sending to %r", conn_id, exc, order[position + 1]
                    )
                    continue
                yield TriggerEvent({"status": "error", "message": str(exc), "error": exc.to_dict()})
                return
            finally:
                await hook.aclose()
            meta = {**completion.meta, "conn_id": conn_id}
            yield TriggerEvent({"status": "success", "response": completion.to_dict(), "meta": meta})
            return
