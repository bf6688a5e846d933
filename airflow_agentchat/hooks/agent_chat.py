"""AgentChatHook: the provider's only HTTP client, and its public face.

Operators, the batch engine, the trigger and the UI all go through it. The hook itself keeps the public
methods and hands each job to a module of its own:

* :mod:`.settings`: the connection, read and checked once (endpoint, key, limits, prices);
* :mod:`.transport`: TLS, proxy and one pooled keep-alive transport per path (or one passed in);
* :mod:`.sending`: the sync and async retry loops and their readers; :mod:`.retry` decides, with no I/O;
* :mod:`.body` and :mod:`.deadline`: the size caps and the deadline of each attempt;
* :mod:`airflow_agentchat.diagnostics`: what ``test_connection`` says.

A 429 or a ``retry-after`` seen by one request pauses every request of the same hook until that moment, so a
batch of many concurrent requests backs off together instead of hammering the agent.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_agentchat.compat import BaseHook
from airflow_agentchat.hooks.retry import RetryPolicy, SharedPause
from airflow_agentchat.hooks.settings import COMPLETIONS_PATH, ConnectionSettings

if TYPE_CHECKING:
    import httpx

    from airflow_agentchat.hooks.limits import AgentLimiter
    from airflow_agentchat.hooks.sending import Sender
    from airflow_agentchat.hooks.transport import AnyTransport, Transport
    from airflow_agentchat.models import (
        ChatCompletion,
        ChatCompletionChunk,
        ChatCompletionRequest,
        ChatMessage,
    )

__all__ = ["COMPLETIONS_PATH", "AgentChatHook", "ConnectionSettings"]


class AgentChatHook(BaseHook):
    """Talk to an agent chat completions endpoint through an ``agentchat`` connection.

    :param agentchat_conn_id: the connection: host is the agent endpoint, password the agent access key.
    :param timeout: read timeout in seconds; overrides the connection's ``timeout``.
    :param max_retries: retries of 408/409/429/5xx and connection errors; overrides the connection.
    :param max_connections: pool size of the async client (the batch operator sets it to its concurrency).
    :param retry_policy: back-off rule; tests inject one with a fixed jitter.
    :param sleep: replaces the sync retry loop's wait (tests record the delays); by default the wait ends
        early when :meth:`cancel` is called.
    :param async_sleep: ``asyncio.sleep`` replacement for the async retry loop.
    :param before_attempt: awaited by the async path just before each attempt goes out, with its number
        (1, 2, ...), after any shared pause is over: where a caller takes a rate-limit slot, so that time spent
        paused or backing off never takes one. The batch engine's request pacing uses it.
    :param limit_share: how many instances of this task may send at once (a mapped batch's shards): without
        a shared limit backend, each paces at that share of the connection's ``requests_per_minute`` and
        ``tokens_per_minute``.
    :param transport: an ``httpx.BaseTransport`` and/or ``httpx.AsyncBaseTransport`` to send through instead
        of the hook's own (a test's ``httpx.MockTransport``, or a transport with custom TLS); it serves the
        paths it supports and is not closed by the hook.
    """

    conn_name_attr = "agentchat_conn_id"
    default_conn_name = "agentchat_default"
    conn_type = "agentchat"
    hook_name = "Agent Chat"

    def __init__(
        self,
        agentchat_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        max_connections: int = 100,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], object] | None = None,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        before_attempt: Callable[[int], Awaitable[None]] | None = None,
        transport: AnyTransport | None = None,
        limit_share: int = 1,
    ) -> None:
        super().__init__()
        self.agentchat_conn_id = agentchat_conn_id
        self._timeout = timeout
        self._max_retries = max_retries
        self._max_connections = max_connections
        self._retry_policy = retry_policy
        self._cancel_event = threading.Event()
        # Back-off sleeps wait on the cancel event, so on_kill ends a retry wait at once.
        self._sleep = sleep or self._cancel_event.wait
        self._async_sleep = async_sleep
        self._before_attempt = before_attempt
        self._given_transport = transport
        self._limit_share = limit_share
        self._pause = SharedPause()  # shared by every request of this hook

    # ---------------------------------------------------------------------------------------- connection

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The connection, read once per hook, with this hook's ``timeout`` / ``max_retries``."""
        conn = self.get_connection(self.agentchat_conn_id)
        return ConnectionSettings.from_connection(conn).overridden(timeout=self._timeout, max_retries=self._max_retries)

    async def _asettings(self) -> ConnectionSettings:
        # In the triggerer the sync connection lookup must not run on the event loop.
        if "settings" not in self.__dict__:
            conn = await self.aget_connection(self.agentchat_conn_id)
            settings = ConnectionSettings.from_connection(conn)
            self.__dict__["settings"] = settings.overridden(timeout=self._timeout, max_retries=self._max_retries)
        backend = self.settings.limits.backend_conn_id
        limited = self.settings.limits.requests_per_minute or self.settings.limits.tokens_per_minute
        if "_limiter" not in self.__dict__ and backend and limited:
            self.__dict__["_limiter"] = self._build_limiter(await self.aget_connection(backend))
        return self.settings

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        return self._retry_policy or RetryPolicy(max_retries=self.settings.max_retries)

    @cached_property
    def _transport(self) -> Transport:
        from airflow_agentchat.hooks.transport import Transport

        return Transport(self.settings, self._max_connections, self._given_transport)

    @cached_property
    def _limiter(self) -> AgentLimiter | None:
        """The connection's ``requests_per_minute`` and ``tokens_per_minute``, shared through its backend when it
        names one."""
        limits = self.settings.limits
        if limits.requests_per_minute is None and limits.tokens_per_minute is None:
            return None
        return self._build_limiter(self.get_connection(limits.backend_conn_id) if limits.backend_conn_id else None)

    def _build_limiter(self, backend_conn: Any) -> AgentLimiter | None:
        from airflow_agentchat.hooks.limits import build_limiter

        return build_limiter(
            self.settings.base_url, self.settings.limits, backend_conn, share=self._limit_share, log=self.log
        )

    @cached_property
    def _sender(self) -> Sender:
        from airflow_agentchat.hooks.sending import Sender

        return Sender(
            self.settings,
            self._transport,
            self.retry_policy,
            self._pause,
            self._cancel_event.is_set,
            self._sleep,
            self._async_sleep,
            self._before_attempt,
            self.log,
            self._limiter,
        )

    @property
    def _proxy(self) -> str | None:
        return self._transport.proxy

    @property
    def client(self) -> httpx.Client:
        """An ``httpx.Client`` on the hook's sync transport and headers, for callers who want the raw client."""
        return self._transport.client

    def get_conn(self) -> httpx.Client:
        return self.client

    def close(self) -> None:
        """Close the sync connections (the async ones are closed by :meth:`aclose`)."""
        if "_transport" in self.__dict__:
            self._transport.close()

    def cancel(self) -> None:
        """Abort the sync requests in flight, from another thread or a signal handler (``on_kill``).

        Closing an httpx client does not wake a thread blocked reading a socket, so this shuts the hook's
        sockets down; the blocked read then fails at once, and no retry follows.
        """
        self._cancel_event.set()
        if "_transport" in self.__dict__:
            self._transport.cut()
        self.close()

    async def aclose(self) -> None:
        """Close the async transport's connections."""
        if "_transport" in self.__dict__:
            await self._transport.aclose()

    def __enter__(self) -> AgentChatHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> AgentChatHook:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close both transports: asyncio code may have used the sync client too (``hook.client``)."""
        await self.aclose()
        self.close()

    # ---------------------------------------------------------------------------------------- requests

    def build_request(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]] | None,
        *,
        model: str | None = None,
        **params: Any,
    ) -> ChatCompletionRequest:
        """Validate a request; the model falls back to the task's, then the connection's, then a placeholder.

        Raises :class:`~airflow_agentchat.exceptions.InvalidRequestError` naming every bad field, before any
        network call.
        """
        from airflow_agentchat.models import build_request

        return build_request(messages, model=model or self.settings.model, **params)

    def request_deadline(self) -> float:
        """The longest one request may take in seconds: every attempt's deadline plus the longest back-offs.

        The deferrable operator defers with this as its trigger timeout.
        """
        policy = self.retry_policy
        return (policy.max_retries + 1) * self.settings.deadline + policy.max_retries * policy.max_wait

    def pause_remaining(self) -> float:
        """Seconds until this hook sends again after a 429 / ``retry-after`` (the shared back-off); ≤ 0: now."""
        return self._pause.remaining()

    def create_chat_completion(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        *,
        model: str | None = None,
        **params: Any,
    ) -> ChatCompletion:
        """Send one request and return the parsed completion.

        ``params`` are body fields of the reference (``temperature``, ``tools``, ``extra_body``, ...). With
        ``stream=True`` the answer is streamed and folded into one completion.
        """
        return self.send(self.build_request(messages, model=model, **params))

    def send(self, request: ChatCompletionRequest) -> ChatCompletion:
        """Send an already validated request (streamed and folded when ``request.stream``)."""
        return self._sender.send(request)

    def stream_chat_completion(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        *,
        model: str | None = None,
        **params: Any,
    ) -> Iterator[ChatCompletionChunk]:
        """Stream a completion chunk by chunk. Retries happen only before the first chunk is delivered."""
        params["stream"] = True
        return self.stream(self.build_request(messages, model=model, **params))

    def stream(self, request: ChatCompletionRequest) -> Iterator[ChatCompletionChunk]:
        """Stream an already validated request (``request.stream`` must be true).

        The first chunk is read inside the retry loop: a stream that breaks before it is sent again. Once a
        chunk was delivered, a break raises :class:`StreamError` (the caller has acted on part of an answer).
        """
        with self.open_stream(request) as (_, chunks):
            yield from chunks

    @contextmanager
    def open_stream(
        self, request: ChatCompletionRequest
    ) -> Iterator[tuple[dict[str, Any], Iterator[ChatCompletionChunk]]]:
        """:meth:`stream`, opened: ``(meta, chunks)`` once the first chunk is in, before it is delivered.

        ``meta`` holds the ``attempts`` and the ``request_id`` of the response that streams, for a caller that
        shows them while the answer is still arriving (the Agent Chat page).
        """
        with self._sender.open_stream(request) as opened:
            yield opened

    async def acreate_chat_completion(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        *,
        model: str | None = None,
        **params: Any,
    ) -> ChatCompletion:
        """Async twin of :meth:`create_chat_completion`."""
        await self._asettings()
        return await self.asend(self.build_request(messages, model=model, **params))

    async def asend(self, request: ChatCompletionRequest) -> ChatCompletion:
        """Async twin of :meth:`send` (the batch engine validates each item once, then sends it)."""
        await self._asettings()
        return await self._sender.asend(request)

    async def astream_chat_completion(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        *,
        model: str | None = None,
        **params: Any,
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Async twin of :meth:`stream_chat_completion`."""
        await self._asettings()
        params["stream"] = True
        async for chunk in self.astream(self.build_request(messages, model=model, **params)):
            yield chunk

    async def astream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Async twin of :meth:`stream`."""
        await self._asettings()
        async for chunk in self._sender.astream(request):
            yield chunk

    @asynccontextmanager
    async def aopen_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[tuple[dict[str, Any], AsyncIterator[ChatCompletionChunk]]]:
        """Async twin of :meth:`open_stream`: the Agent Chat page streams without holding a server thread."""
        await self._asettings()
        async with self._sender.aopen_stream(request) as opened:
            yield opened

    def agent(self, agent: str) -> Any:
        """This connection's agent for common.ai's ``ManagedAgentToolset`` / ``FailoverManagedAgentClient`` (needs
        the ``common-ai`` extra): see :class:`~airflow_agentchat.hooks.managed_agent.AgentChatManagedAgentHook`."""
        from airflow_agentchat.hooks.managed_agent import AgentChatManagedAgentHook

        hook = AgentChatManagedAgentHook(self.agentchat_conn_id, timeout=self._timeout, max_retries=self._max_retries)
        return hook.agent(agent)

    # ---------------------------------------------------------------------------------------- UI

    def test_connection(self) -> tuple[bool, str]:
        """Send the smallest real request; say what happened in one line a person can act on."""
        from airflow_agentchat import diagnostics
        from airflow_agentchat.exceptions import AgentChatError

        try:
            settings = self.settings
        except Exception as exc:
            return False, str(exc)
        hook = AgentChatHook(self.agentchat_conn_id, max_retries=0, transport=self._given_transport)
        hook.__dict__["settings"] = settings.overridden(timeout=min(settings.timeout, 30.0), max_retries=0)
        started = time.perf_counter()
        try:
            completion = hook.create_chat_completion([{"role": "user", "content": "ping"}], max_tokens=16)
        except AgentChatError as exc:
            return False, diagnostics.failed(settings.completions_url, exc)
        finally:
            hook.close()
        return True, diagnostics.connected(settings.completions_url, (time.perf_counter() - started) * 1000, completion)
