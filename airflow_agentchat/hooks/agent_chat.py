"""AgentChatHook: the provider's only HTTP client.

It owns the connection (endpoint + agent access key) and everything on the wire: validation before sending,
one pooled keep-alive client per hook (sync: httpx's own transport; async: httpx on the ``httpx-aiohttp``
transport, which keeps every httpx type but drives hundreds of requests in flight at the latency bound, see
benchmarks/RESULTS.md), retries that honour the server's rate-limit headers, streaming, and
``test_connection``. Operators, the batch engine, the trigger and the UI all go through it.

A 429 or a ``retry-after`` seen by one request pauses every request of the same hook until that moment, so a
batch of many concurrent requests backs off together instead of hammering the agent.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import math
import os
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx
from airflow.sdk import BaseHook

from airflow_agentchat.exceptions import (
    AgentChatConnectionError,
    AgentChatError,
    APIError,
    AuthenticationError,
    DNSError,
    InvalidResponseError,
    NetworkTimeoutError,
    NotFoundError,
    RateLimitError,
    RefusedError,
    ResetError,
    TLSError,
)
from airflow_agentchat.hooks.body import Deadline, aiter_body, aread_body, iter_body, read_body
from airflow_agentchat.hooks.deadline import WATCHDOG, Sockets, deadline_scope
from airflow_agentchat.hooks.retry import RetryController, RetryPolicy, SharedPause, retry_after_from_headers
from airflow_agentchat.redaction import redact_optional
from airflow_agentchat.wire_errors import connection_error, error_from_response, request_id_from_headers

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_agentchat.models import (
        ChatCompletion,
        ChatCompletionChunk,
        ChatCompletionRequest,
        ChatMessage,
    )

COMPLETIONS_PATH = "/api/v1/chat/completions"
DEFAULT_MAX_RESPONSE_BYTES = 16 << 20
DEFAULT_MAX_EVENT_BYTES = 4 << 20
DEADLINE_FACTOR = 4
_PASTED_SUFFIXES = ("/api/v1/chat/completions", "/api/v1/chat", "/api/v1")
_USER_AGENT = "airflow-agentchat/0.1"
_T = TypeVar("_T")


@dataclass(frozen=True)
class ConnectionSettings:
    """What the hook needs from an Airflow connection, checked once.

    ``api_key`` is kept out of ``repr`` so a settings object can be logged.
    """

    base_url: str
    api_key: str | None
    timeout: float = 120.0
    max_retries: int = 4
    model: str | None = None
    verify: bool | str = True
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    attempt_deadline: float | None = None

    def __repr__(self) -> str:
        return f"ConnectionSettings(base_url={self.base_url!r}, timeout={self.timeout}, model={self.model!r})"

    @property
    def completions_url(self) -> str:
        return f"{self.base_url}{COMPLETIONS_PATH}"

    @property
    def deadline(self) -> float:
        """Seconds one attempt may take in all, body included: ``attempt_deadline``, else 4 x ``timeout``.

        The read timeout bounds each read only; a server that trickles a byte at a time would hold an
        attempt forever without this.
        """
        return self.attempt_deadline if self.attempt_deadline is not None else DEADLINE_FACTOR * self.timeout

    @classmethod
    def from_connection(cls, conn: Connection) -> ConnectionSettings:
        """Read host, key and the ``conn-fields`` extras; refuse plain http to a non-loopback host."""
        extra = conn.extra_dejson or {}
        host = (conn.host or "").strip()
        if not host:
            raise AgentChatError(f"Connection {conn.conn_id!r} has no host: set it to the agent endpoint URL.")
        if "://" not in host:
            scheme = conn.schema if conn.schema in ("http", "https") else "https"
            host = f"{scheme}://{host}"
        parts = urlsplit(host)
        if parts.username is not None or parts.password is not None:
            # The host would carry a credential into URLs, logs and error text; it belongs in the password.
            raise AgentChatError(
                f"Connection {conn.conn_id!r}: the host holds user info (user:key@...); put the agent access key "
                "in the connection's password and only the endpoint URL in the host."
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AgentChatError(f"Connection {conn.conn_id!r}: host {host!r} is not an http(s) URL.")
        netloc = parts.netloc
        if conn.port and not parts.port:
            netloc = f"{netloc}:{conn.port}"
        path = parts.path.rstrip("/")
        for suffix in _PASTED_SUFFIXES:
            if path.endswith(suffix):
                path = path[: -len(suffix)]
        if parts.scheme == "http" and not _is_loopback(parts.hostname) and not _as_bool(extra, "allow_insecure_http"):
            raise AgentChatError(
                f"Connection {conn.conn_id!r}: plain http to {parts.hostname} would send the access key in "
                "clear text; use https, or set extra allow_insecure_http=true to accept that."
            )
        verify: bool | str = extra.get("ca_bundle") or _as_bool(extra, "verify", default=True)
        return cls(
            base_url=f"{parts.scheme}://{netloc}{path}",
            api_key=conn.password or None,
            timeout=float(extra.get("timeout") or 120.0),
            max_retries=int(extra["max_retries"]) if extra.get("max_retries") is not None else 4,
            model=extra.get("model") or None,
            verify=verify,
            max_response_bytes=int(_positive(extra, "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES) or 0),
            max_event_bytes=int(_positive(extra, "max_event_bytes", DEFAULT_MAX_EVENT_BYTES) or 0),
            attempt_deadline=_positive(extra, "attempt_deadline", None),
        )


def _positive(extra: Mapping[str, Any], key: str, default: float | None) -> float | None:
    """A positive number from an extra that may arrive as text; empty means the default."""
    value = extra.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number > 0 or math.isinf(number):
        raise AgentChatError(f"Connection extra {key!r} must be a positive number, got {value!r}")
    return number


def _as_bool(extra: Mapping[str, Any], key: str, *, default: bool = False) -> bool:
    """Read a boolean extra that may arrive as text (``--conn-extra`` and env JSON often quote them)."""
    value = extra.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise AgentChatError(f"Connection extra {key!r} must be true or false, got {value!r}")


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


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
        self._async_transport: httpx.AsyncBaseTransport | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._pause = SharedPause()  # shared by every request of this hook
        self._sockets = Sockets()

    # ---------------------------------------------------------------------------------------- connection

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The connection, read once per hook."""
        return self._apply_overrides(ConnectionSettings.from_connection(self.get_connection(self.agentchat_conn_id)))

    async def _asettings(self) -> ConnectionSettings:
        # In the triggerer the sync connection lookup must not run on the event loop.
        if "settings" not in self.__dict__:
            conn = await self.aget_connection(self.agentchat_conn_id)
            self.__dict__["settings"] = self._apply_overrides(ConnectionSettings.from_connection(conn))
        return self.settings

    def _apply_overrides(self, settings: ConnectionSettings) -> ConnectionSettings:
        from dataclasses import replace

        if self._timeout is not None:
            settings = replace(settings, timeout=float(self._timeout))
        if self._max_retries is not None:
            settings = replace(settings, max_retries=int(self._max_retries))
        return settings

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        return self._retry_policy or RetryPolicy(max_retries=self.settings.max_retries)

    def _client_options(self) -> dict[str, Any]:
        s = self.settings
        headers = {"User-Agent": _USER_AGENT, "Accept": "application/json"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        return {
            "headers": headers,
            "timeout": httpx.Timeout(s.timeout, connect=min(10.0, s.timeout)),
            "verify": s.verify,
            "follow_redirects": False,
        }

    @cached_property
    def _transport(self) -> httpx.HTTPTransport:
        """Pooled keep-alive sync transport, created on first use; sync requests are sent straight to it."""
        return httpx.HTTPTransport(verify=_ssl_context(self.settings.verify), proxy=self._proxy)

    @cached_property
    def _proxy(self) -> str | None:
        """The ``HTTPS_PROXY`` / ``HTTP_PROXY`` that applies to the endpoint (``NO_PROXY`` honoured).

        The hook sends to transports directly, so it applies the environment's proxy itself, as
        ``httpx.Client(trust_env=True)`` would.
        """
        # proxy_bypass_environment is public in CPython but missing from typeshed.
        from urllib.request import getproxies_environment, proxy_bypass_environment  # type: ignore[attr-defined]

        parts = urlsplit(self.settings.base_url)
        proxies = getproxies_environment()
        if not proxies.get(parts.scheme) or proxy_bypass_environment(parts.hostname or "", proxies):
            return None
        return proxies[parts.scheme]

    @cached_property
    def client(self) -> httpx.Client:
        """An ``httpx.Client`` on the hook's transport and headers, for callers who want the raw client."""
        options = self._client_options()
        del options["verify"]
        return httpx.Client(transport=self._transport, **options)

    def get_conn(self) -> httpx.Client:
        return self.client

    @cached_property
    def _wire(self) -> tuple[httpx.URL, httpx.Headers, dict[str, Any]]:
        """URL, headers and timeout of every request, built once (they are the same for each request).

        Requests go straight to the transport: ``Client.send`` adds cookie, auth and redirect handling per
        request that this API never uses, and that cost is what limits a batch at low latency (see
        benchmarks/RESULTS.md).
        """
        options = self._client_options()
        url = httpx.URL(self.settings.completions_url, params={"agent": "true"})
        extensions = {"timeout": options["timeout"].as_dict(), "trace": self._sockets.trace}
        return url, httpx.Headers({**options["headers"], **_JSON}), extensions

    async def _atransport(self) -> httpx.AsyncBaseTransport:
        """The aiohttp-backed transport of the running event loop (an aiohttp session cannot cross loops)."""
        loop = asyncio.get_running_loop()
        if self._async_transport is None or self._async_loop is not loop:
            from httpx_aiohttp import AiohttpTransport

            await self._asettings()
            limits = httpx.Limits(
                max_connections=self._max_connections, max_keepalive_connections=self._max_connections
            )
            proxy = httpx.Proxy(self._proxy) if self._proxy else None
            self._async_transport = AiohttpTransport(
                verify=_ssl_context(self.settings.verify), limits=limits, proxy=proxy
            )
            self._async_loop = loop
        return self._async_transport

    def close(self) -> None:
        """Close the sync connections (the async ones are closed by :meth:`aclose`)."""
        self.__dict__.pop("client", None)
        if "_transport" in self.__dict__:
            self.__dict__.pop("_transport").close()

    def cancel(self) -> None:
        """Abort the sync requests in flight, from another thread or a signal handler (``on_kill``).

        Closing an httpx client does not wake a thread blocked reading a socket, so this shuts the hook's
        sockets down (learnt through httpcore's public ``trace`` extension); the blocked read then fails at
        once with a connection error.
        """
        self._cancel_event.set()
        self._sockets.shut_all()
        self.close()

    async def aclose(self) -> None:
        """Close the async transport's connections."""
        if self._async_transport is not None:
            transport, self._async_transport = self._async_transport, None
            await transport.aclose()

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

    def _error(self, response: httpx.Response, content: bytes) -> APIError:
        return error_from_response(
            response.status_code,
            response.headers,
            content,
            secret=self.settings.api_key,
            retry_after=retry_after_from_headers(response.headers, rate_limited=response.status_code == 429),
        )

    def request_deadline(self) -> float:
        """The longest one request may take in seconds: every attempt's deadline plus the longest back-offs.

        The deferrable operator defers with this as its trigger timeout.
        """
        policy = self.retry_policy
        return (policy.max_retries + 1) * self.settings.deadline + policy.max_retries * policy.max_wait

    def pause_remaining(self) -> float:
        """Seconds until this hook sends again after a 429 / ``retry-after`` (the shared back-off); ≤ 0: now."""
        return self._pause.remaining()

    def _retries(self) -> RetryController:
        return RetryController(self.retry_policy, self._pause, self._cancel_event.is_set)

    def _failed(self, exc: Exception, deadline: Deadline) -> AgentChatError:
        """The error an attempt ended with: what the loop decides on (anything else escapes unchanged)."""
        if isinstance(exc, httpx.TransportError) and deadline.passed():
            return deadline.error()  # the watchdog shut the socket: say why
        if isinstance(exc, httpx.TransportError):
            return connection_error(exc, self.settings.completions_url, secret=self.settings.api_key)
        if isinstance(exc, AgentChatError):
            return exc
        raise exc

    def _backoff(self, retries: RetryController, error: AgentChatError) -> float:
        """The wait before the next attempt, logged; raises ``error`` when the controller gives up."""
        delay = retries.failed(error)
        self.log.warning(
            "Agent chat request failed (attempt %d/%d): %s; retrying in %.2fs",
            retries.attempts,
            retries.policy.max_retries + 1,
            error,
            delay,
        )
        return delay

    @contextmanager
    def _open(self, request: ChatCompletionRequest, consume: Callable[[httpx.Response, Deadline], _T]) -> Iterator[_T]:
        """Send with retries; yield what ``consume`` made of the first 2xx response.

        ``consume`` reads the body inside the retry loop, so a reset, a timeout, a cut or garbled body while it
        reads is retried like an error status. What the caller does with the result is not retried (a
        stream's chunks after the first one was delivered), but its error still says how many attempts the
        server saw. Every decision is the :class:`RetryController`'s; this loop only sleeps and sends.
        """
        url, headers, extensions = self._wire
        content = request.to_json()
        retries = self._retries()
        while True:
            while (pause := retries.wait()) > 0:
                self._sleep(pause)  # ends early on cancel(); wait() then raises
            retries.sent()
            response: httpx.Response | None = None
            deadline = Deadline(self.settings.deadline, self.settings.completions_url)
            try:
                try:
                    http_request = httpx.Request("POST", url, headers=headers, content=content, extensions=extensions)
                    token = WATCHDOG.arm(deadline.at, self._sockets.attempt().shut)
                    try:
                        response = self._transport.handle_request(http_request)
                    finally:
                        WATCHDOG.disarm(token)
                    self._sockets.seen(response.extensions)
                    if not response.is_success:
                        raise self._error(response, read_body(response, self._max_bytes, deadline, cut=True))
                    response.extensions["agentchat_attempts"] = retries.attempts
                    result = consume(response, deadline)
                except Exception as exc:
                    error = self._failed(exc, deadline)
                else:
                    try:
                        yield result
                    except AgentChatError as exc:
                        exc.attempts = retries.attempts
                        raise
                    return
            finally:
                if response is not None:
                    response.close()
            self._sleep(self._backoff(retries, error))

    @asynccontextmanager
    async def _aopen(
        self, request: ChatCompletionRequest, consume: Callable[[httpx.Response, Deadline], Awaitable[_T]]
    ) -> AsyncIterator[_T]:
        """Async twin of :meth:`_open`."""
        transport = await self._atransport()
        url, headers, extensions = self._wire
        # Built from a ready body stream: aiohttp sets Host and Content-Length itself, so httpx's header
        # preparation (a third of building a request) is skipped. The same request serves every attempt.
        http_request = httpx.Request(
            "POST", url, headers=headers, stream=httpx.ByteStream(request.to_json()), extensions=extensions
        )
        http_request.read()
        retries = self._retries()
        while True:
            while (pause := retries.wait()) > 0:
                await self._async_sleep(pause)
            if self._before_attempt is not None:
                await self._before_attempt(retries.attempts + 1)
            retries.sent()
            response: httpx.Response | None = None
            deadline = Deadline(self.settings.deadline, self.settings.completions_url)
            try:
                try:
                    async with deadline_scope(deadline):
                        response = await transport.handle_async_request(http_request)
                    if not response.is_success:
                        raise self._error(response, await aread_body(response, self._max_bytes, deadline, cut=True))
                    response.extensions["agentchat_attempts"] = retries.attempts
                    result = await consume(response, deadline)
                except Exception as exc:
                    error = self._failed(exc, deadline)
                else:
                    try:
                        yield result
                    except AgentChatError as exc:
                        exc.attempts = retries.attempts
                        raise
                    return
            finally:
                if response is not None:
                    await response.aclose()
            await self._async_sleep(self._backoff(retries, error))

    def _parse(self, response: httpx.Response, content: bytes, started: float) -> ChatCompletion:
        """The completion in a 2xx body; a body that is not one is an :class:`InvalidResponseError` (retried)."""
        from pydantic import ValidationError

        from airflow_agentchat.models import ChatCompletion

        try:
            completion = ChatCompletion.model_validate_json(content)
        except ValidationError as exc:
            problem = f"{exc.error_count()} problems, first: {exc.errors(include_input=False)[0]['msg']}"
        else:
            if completion.choices:
                return _with_meta(completion, response, self.settings.api_key, started)
            problem = "no choices"
        raise InvalidResponseError(
            response.status_code,
            f"Response is not a chat completion ({problem})",
            request_id=redact_optional(request_id_from_headers(response.headers), self.settings.api_key),
        )

    @property
    def _max_bytes(self) -> int:
        return self.settings.max_response_bytes

    def _chunks(self, response: httpx.Response, deadline: Deadline) -> Iterator[ChatCompletionChunk]:
        """The chunks of a streaming response, read within the size caps and the attempt's deadline."""
        from airflow_agentchat.streaming import iter_chunks

        s = self.settings
        body = iter_body(response, s.max_response_bytes, deadline)
        return iter_chunks(response, secret=s.api_key, body=body, max_event_bytes=s.max_event_bytes)

    def _achunks(self, response: httpx.Response, deadline: Deadline) -> AsyncIterator[ChatCompletionChunk]:
        from airflow_agentchat.streaming import aiter_chunks

        s = self.settings
        body = aiter_body(response, s.max_response_bytes, deadline)
        return aiter_chunks(response, secret=s.api_key, body=body, max_event_bytes=s.max_event_bytes)

    def _reader(self, started: float) -> Callable[[httpx.Response, Deadline], ChatCompletion]:
        """The consume step of a plain request: read the body and parse it."""
        return lambda response, deadline: self._parse(response, read_body(response, self._max_bytes, deadline), started)

    def _areader(self, started: float) -> Callable[[httpx.Response, Deadline], Awaitable[ChatCompletion]]:
        async def read(response: httpx.Response, deadline: Deadline) -> ChatCompletion:
            return self._parse(response, await aread_body(response, self._max_bytes, deadline), started)

        return read

    def _folder(self, started: float) -> Callable[[httpx.Response, Deadline], ChatCompletion]:
        """The consume step of a stream the hook folds: nothing is delivered before the whole answer is in."""
        from airflow_agentchat.streaming import fold_chunks

        secret = self.settings.api_key
        return lambda response, deadline: _with_meta(
            fold_chunks(self._chunks(response, deadline)), response, secret, started
        )

    def _afolder(self, started: float) -> Callable[[httpx.Response, Deadline], Awaitable[ChatCompletion]]:
        from airflow_agentchat.streaming import ChunkFolder

        secret = self.settings.api_key

        async def fold(response: httpx.Response, deadline: Deadline) -> ChatCompletion:
            folder = ChunkFolder()
            async for chunk in self._achunks(response, deadline):
                folder.add(chunk)
            return _with_meta(folder.result(), response, secret, started)

        return fold

    # ---------------------------------------------------------------------------------------- public API

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
        started = time.perf_counter()
        consume = self._folder(started) if request.stream else self._reader(started)
        with self._open(request, consume) as completion:
            return completion

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
        secret = self.settings.api_key

        def first(response: httpx.Response, deadline: Deadline) -> tuple[dict[str, Any], Iterator[ChatCompletionChunk]]:
            chunks = self._chunks(response, deadline)
            head = next(chunks, None)
            return _response_meta(response, secret), iter(()) if head is None else itertools.chain([head], chunks)

        with self._open(request, first) as opened:
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
        started = time.perf_counter()
        consume = self._afolder(started) if request.stream else self._areader(started)
        async with self._aopen(request, consume) as completion:
            return completion

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

        async def first(
            response: httpx.Response, deadline: Deadline
        ) -> tuple[AsyncIterator[ChatCompletionChunk], ChatCompletionChunk | None]:
            chunks = self._achunks(response, deadline)
            return chunks, await anext(chunks, None)

        async with self._aopen(request, first) as (chunks, head):
            if head is not None:
                yield head
                async for chunk in chunks:
                    yield chunk

    # ---------------------------------------------------------------------------------------- UI

    def test_connection(self) -> tuple[bool, str]:
        """Send the smallest real request; say what happened in one line a person can act on."""
        try:
            settings = self.settings
        except Exception as exc:
            return False, str(exc)
        hook = AgentChatHook(self.agentchat_conn_id, timeout=min(settings.timeout, 30.0), max_retries=0)
        hook.__dict__["settings"] = hook._apply_overrides(settings)
        url = settings.completions_url
        started = time.perf_counter()
        try:
            completion = hook.create_chat_completion([{"role": "user", "content": "ping"}], max_tokens=16)
        except AuthenticationError as exc:
            return (
                False,
                f"Access key rejected by {url} ({_short(exc)}): check the connection's Agent access key.",
            )
        except NotFoundError as exc:
            return False, (
                f"{url} answered 404 ({_short(exc)}): the host is not an agent endpoint; set it to the "
                "agent's URL, e.g. https://<id>.agents.do-ai.run."
            )
        except RateLimitError as exc:
            return (
                False,
                f"Rate limited by {url} ({_short(exc)}): the endpoint is reachable; try again later.",
            )
        except APIError as exc:
            return False, f"{url} answered with an error: {exc}"
        except AgentChatConnectionError as exc:
            return False, _explain_connection_error(url, exc)
        except AgentChatError as exc:
            return False, f"Request to {url} failed: {exc}"
        finally:
            hook.close()
        elapsed = (time.perf_counter() - started) * 1000
        usage = completion.usage_dict()
        return True, (
            f"Connected to {url} in {elapsed:.0f} ms: model {completion.model or '(unnamed)'} answered, "
            f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion tokens."
        )


_JSON = {"Content-Type": "application/json"}


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context for ``verify``, built once per process for each setting and trust-store environment.

    Loading the system CA bundle takes ~20 ms, paid by every hook (each batch, each trigger) before its first
    request; a context is safe to share between transports and threads once built.
    """
    return _cached_ssl_context(verify, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@lru_cache(maxsize=8)
def _cached_ssl_context(verify: bool | str, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    if isinstance(verify, str):  # a CA bundle file or directory (httpx deprecates passing the path itself)
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context(verify=verify)


def _response_meta(response: httpx.Response, secret: str | None) -> dict[str, Any]:
    # One decoding pass over the headers: each httpx ``Headers.get`` walks and decodes the whole list.
    headers = dict(response.headers.multi_items())
    return {
        "attempts": response.extensions.get("agentchat_attempts", 1),
        "request_id": redact_optional(request_id_from_headers(headers), secret),
    }


def _with_meta(
    completion: ChatCompletion, response: httpx.Response, secret: str | None, started: float
) -> ChatCompletion:
    completion._meta = {
        **_response_meta(response, secret),
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    return completion


def _short(exc: APIError) -> str:
    parts = [f"HTTP {exc.status}"]
    if exc.code and exc.code != str(exc.status):
        parts.append(str(exc.code))
    if exc.message:
        parts.append(exc.message[:120])
    if exc.request_id:
        parts.append(f"request id {exc.request_id}")
    return ", ".join(parts)


_CONNECTION_ADVICE: dict[type[AgentChatConnectionError], str] = {
    TLSError: "TLS failed for {url}: {text}. Set the connection's CA bundle, or verify=false for a test server.",
    DNSError: "Cannot resolve the host of {url}: check the connection's Agent endpoint.",
    RefusedError: "Cannot connect to {url} (connection refused): is the endpoint up and the port right?",
    NetworkTimeoutError: "Timed out talking to {url}: the endpoint is slow or unreachable from this worker.",
    ResetError: "{url} closed the connection before answering: {text}. A proxy or firewall may be in the way.",
}


def _explain_connection_error(url: str, exc: AgentChatConnectionError) -> str:
    advice = next((_CONNECTION_ADVICE[cls] for cls in type(exc).__mro__ if cls in _CONNECTION_ADVICE), None)
    return (advice or "Cannot reach {url}: {text}").format(url=url, text=exc)
