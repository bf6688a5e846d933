"""The response cache of one completion task: the conversation's first request is the key, its final valid
answer the entry (the rules of the key and the storage: :mod:`airflow_agentchat.response_cache`).

A hit ends the task with no request: the cached answer goes through the same conversation (it is final and
valid, so nothing more is sent) and XCom gets ``cached: true``, the original usage as ``cached_usage`` and zero
``usage`` / ``cost``, since nothing was paid now; the budget and the metrics never see it.

Tasks with Python tools or ``require_approval`` are never cached: a cached answer would skip the tools' side
effects, and a reviewed answer is the reviewer's choice, not the agent's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_agentchat.models import ChatCompletion
    from airflow_agentchat.response_cache import ResponseCache
    from airflow_agentchat.structured_output import OutputSpec


class TaskCache:
    """Looks the first request up once, and stores the final answer when it is valid."""

    def __init__(self, operator: Any) -> None:
        self.operator = operator
        self.request: Any = None  # the conversation's first request: the key
        self.hit: ChatCompletion | None = None

    @classmethod
    def of(cls, operator: Any) -> TaskCache | None:
        """The task's cache, or None: no ``cache_path``, or a task that is never cached (tools, review)."""
        if not getattr(operator, "cache_path", None):
            return None
        if getattr(operator, "python_tools", None) or operator.approval_required():
            operator.log.warning("cache_path is not used: a task with Python tools or require_approval is never cached")
            return None
        return cls(operator)

    def _open(self) -> tuple[ResponseCache, OutputSpec | None]:
        """The cache for the endpoint of the task's current connection (a fallback's after a failover)."""
        from airflow_agentchat.response_cache import ResponseCache

        operator = self.operator
        spec = operator.output_spec()
        cache = ResponseCache.for_task(operator, operator.hook.settings.base_url, spec.schema if spec else None)
        assert cache is not None  # cache_path is set: checked in ``of``
        return cache, spec

    def answer(self, request: Any) -> ChatCompletion | None:
        """The cached answer to the conversation's first request (looked up once); None for any other request."""
        if self.request is None:
            self.request = request
            cache, _ = self._open()
            key = cache.key(request)
            log = self.operator.log
            if key is None:
                log.info("Response cache: not used (temperature > 0 or unset, no seed; cache_nondeterministic=False)")
            elif (entry := cache.lookup(key)) is not None:
                self.hit = entry.completion()
                log.info("Response cache: answered from %s (entry %s); nothing is sent", cache, key)
        return self.hit if request is self.request else None

    def is_hit(self, completion: Any) -> bool:
        return self.hit is not None and completion is self.hit

    def keep(self, completion: ChatCompletion) -> None:
        """Store the final, valid answer under the first request's key (for the connection that answered)."""
        operator = self.operator
        if self.request is None:  # the triggerer sent the first request: build it again, as sent
            messages, params, _ = operator.prepare()
            self.request = operator.hook.build_request(messages, **params)
        cache, spec = self._open()
        key = cache.key(self.request)
        if key is None:
            return
        fields: dict[str, Any] = {"text": completion.text, "finish_reason": completion.finish_reason}
        if spec is not None:  # what a batch line sharing this cache gets as its ``output``
            from airflow_agentchat.structured_output import message_of

            fields["output"] = spec.parse(message_of(completion)).value
        cache.store(key, completion, fields)
