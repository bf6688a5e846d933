"""Send a request with retries and read its answer: the two retry loops of the hook and their readers.

Every retry decision is :class:`~airflow_agentchat.hooks.retry.RetryController`'s; the loops here only sleep,
send and read. Each attempt gets a :class:`~airflow_agentchat.hooks.body.Deadline`, and its body is read
within the connection's size caps (:mod:`airflow_agentchat.hooks.body`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from airflow_agentchat.exceptions import AgentChatError, APIError, InvalidResponseError
from airflow_agentchat.hooks.body import Deadline, aiter_body, aread_body, iter_body, read_body
from airflow_agentchat.hooks.deadline import WATCHDOG, deadline_scope
from airflow_agentchat.hooks.retry import RetryController, RetryPolicy, SharedPause, retry_after_from_headers
from airflow_agentchat.redaction import redact_optional
from airflow_agentchat.wire_errors import (
    connection_error,
    error_from_response,
    is_transport_failure,
    request_id_from_headers,
)

if TYPE_CHECKING:
    from airflow_agentchat.hooks.limits import AgentLimiter
    from airflow_agentchat.hooks.settings import ConnectionSettings
    from airflow_agentchat.hooks.transport import Transport
    from airflow_agentchat.models import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest

_T = TypeVar("_T")


class Sender:
    """The request loops of one hook: what it sends with, how it waits, and the pause its requests share."""

    def __init__(
        self,
        settings: ConnectionSettings,
        transport: Transport,
        policy: RetryPolicy,
        pause: SharedPause,
        cancelled: Callable[[], bool],
        sleep: Callable[[float], object],
        async_sleep: Callable[[float], Awaitable[None]],
        before_attempt: Callable[[int], Awaitable[None]] | None,
        log: Any,
        limiter: AgentLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.policy = policy
        self.pause = pause
        self.cancelled = cancelled
        self.sleep = sleep
        self.async_sleep = async_sleep
        self.before_attempt = before_attempt
        self.log = log
        self.limiter = limiter

    def _error(self, response: httpx.Response, content: bytes) -> APIError:
        return error_from_response(
            response.status_code,
            response.headers,
            content,
            secret=self.settings.api_key,
            retry_after=retry_after_from_headers(response.headers, rate_limited=response.status_code == 429),
        )

    def _retries(self) -> RetryController:
        return RetryController(self.policy, self.pause, self.cancelled)

    def _failed(self, exc: Exception, deadline: Deadline) -> AgentChatError:
        """The error an attempt ended with: what the loop decides on (anything else escapes unchanged)."""
        if not is_transport_failure(exc):
            if isinstance(exc, AgentChatError):
                return exc
            raise exc
        if deadline.passed():
            return deadline.error()  # the watchdog shut the socket: say why
        return connection_error(exc, self.settings.completions_url, secret=self.settings.api_key)

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
        url, headers, extensions = self.transport.wire
        content = request.to_json()
        tokens = self._tokens(request)
        retries = self._retries()
        while True:
            while (pause := retries.wait()) > 0:
                self.sleep(pause)  # ends early on cancel(); wait() then raises
            if self.limiter is not None:  # the agent's slot and token estimate: every attempt takes them
                self.limiter.acquire(self.pause, self.sleep, tokens)
                retries.wait()  # raises when cancelled while waiting for it
            retries.sent()
            response: httpx.Response | None = None
            deadline = Deadline(self.settings.deadline, self.settings.completions_url)
            try:
                try:
                    http_request = httpx.Request("POST", url, headers=headers, content=content, extensions=extensions)
                    token = WATCHDOG.arm(deadline.at, self.transport.sockets.attempt().shut)
                    try:
                        response = self.transport.sync.handle_request(http_request)
                    finally:
                        WATCHDOG.disarm(token)
                    self.transport.sockets.seen(response.extensions)
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
            paused = self.pause.until
            delay = self._backoff(retries, error)
            if self.limiter is not None and self.pause.until > paused:
                self.limiter.publish_pause(self.pause.remaining())  # every sender of the agent waits too
            self.sleep(delay)

    @asynccontextmanager
    async def _aopen(
        self, request: ChatCompletionRequest, consume: Callable[[httpx.Response, Deadline], Awaitable[_T]]
    ) -> AsyncIterator[_T]:
        """Async twin of :meth:`_open`."""
        transport = self.transport.current_async()
        url, headers, extensions = self.transport.wire
        # Built from a ready body stream: aiohttp sets Host and Content-Length itself, so httpx's header
        # preparation (a third of building a request) is skipped. The same request serves every attempt.
        http_request = httpx.Request(
            "POST", url, headers=headers, stream=httpx.ByteStream(request.to_json()), extensions=extensions
        )
        http_request.read()
        tokens = self._tokens(request)
        retries = self._retries()
        while True:
            while (pause := retries.wait()) > 0:
                await self.async_sleep(pause)
            if self.before_attempt is not None:
                await self.before_attempt(retries.attempts + 1)
            if self.limiter is not None:  # last: a slot of the agent's shared limit is not held while waiting
                await self.limiter.aacquire(self.pause, self.async_sleep, tokens)
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
            paused = self.pause.until
            delay = self._backoff(retries, error)
            if self.limiter is not None and self.pause.until > paused:
                await self.limiter.apublish_pause(self.pause.remaining())
            await self.async_sleep(delay)

    def _tokens(self, request: ChatCompletionRequest) -> int:
        """The tokens each attempt reserves under the connection's ``tokens_per_minute`` (0: no token limit)."""
        if self.limiter is None or not self.limiter.counts_tokens:
            return 0
        from airflow_agentchat.spend import DEFAULT_COMPLETION_TOKENS, completion_cap, estimate

        return estimate(request) + (completion_cap(request) or DEFAULT_COMPLETION_TOKENS)

    def _settle(self, request: ChatCompletionRequest, completion: ChatCompletion) -> None:
        """Charge what the answer used beyond its estimate to the next reservation."""
        if self.limiter is not None and self.limiter.counts_tokens:
            self.limiter.correct(self._tokens(request), getattr(completion.usage, "total_tokens", None))

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

    def send(self, request: ChatCompletionRequest) -> ChatCompletion:
        """Send an already validated request (streamed and folded when ``request.stream``)."""
        started = time.perf_counter()
        consume = self._folder(started) if request.stream else self._reader(started)
        with self._open(request, consume) as completion:
            self._settle(request, completion)
            return completion

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

    async def asend(self, request: ChatCompletionRequest) -> ChatCompletion:
        """Async twin of :meth:`send` (the batch engine validates each item once, then sends it)."""
        started = time.perf_counter()
        consume = self._afolder(started) if request.stream else self._areader(started)
        async with self._aopen(request, consume) as completion:
            self._settle(request, completion)
            return completion

    @asynccontextmanager
    async def aopen_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[tuple[dict[str, Any], AsyncIterator[ChatCompletionChunk]]]:
        """Async twin of :meth:`open_stream`."""
        secret = self.settings.api_key

        async def first(
            response: httpx.Response, deadline: Deadline
        ) -> tuple[dict[str, Any], AsyncIterator[ChatCompletionChunk]]:
            chunks = self._achunks(response, deadline)
            head = await anext(chunks, None)

            async def rest() -> AsyncIterator[ChatCompletionChunk]:
                if head is not None:
                    yield head
                    async for chunk in chunks:
                        yield chunk

            return _response_meta(response, secret), rest()

        async with self._aopen(request, first) as opened:
            yield opened

    async def astream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Async twin of :meth:`stream`."""
        async with self.aopen_stream(request) as (_, chunks):
            async for chunk in chunks:
                yield chunk


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
