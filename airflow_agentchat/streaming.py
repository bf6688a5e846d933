"""Read a streamed chat completion (server-sent events) and fold its chunks into one ``ChatCompletion``.

Framing uses ``httpx-sse``'s :class:`~httpx_sse._decoders.SSELineDecoder` (splits on CR, LF and CRLF only,
and holds a trailing CR back so a CRLF that straddles two network reads is one line break; U+2028, U+2029 and
U+0085 are not line breaks) and its :class:`~httpx_sse._decoders.SSEDecoder` (comments, ``field:value`` with
one space stripped, ``data:`` lines joined with ``\\n``, dispatch on a blank line). Both were checked against
every split point of a byte script holding those cases. We do not use ``EventSource`` itself because:

* it decodes with ``response.iter_text()``, i.e. the charset the server declares; SSE is always UTF-8, so we
  decode ``response.iter_bytes()`` with an incremental UTF-8 decoder of our own (a multi-byte character split
  across reads is held until complete; a leading BOM is dropped as the SSE spec says). Line breaks are ASCII
  and never occur inside a multi-byte sequence, so this equals decoding each complete line;
* it rejects a response whose ``Content-Type`` is not ``text/event-stream``; checking the status and type of
  the response is the hook's job, before it hands the body to us.

On top of the framing this module adds what the chat completions API needs: ``[DONE]`` ends the stream (bytes
after it are not read), an ``{"error": ...}`` event or data that is not a chunk raises :class:`StreamError`, a
transport error while reading raises :class:`StreamError`, and a body that ends without ``[DONE]`` and
without a finish reason on every choice raises :class:`TruncatedStreamError` rather than passing for a short
answer.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

import httpx
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from pydantic import ValidationError

from airflow_agentchat.exceptions import ResponseTooLargeError, StreamError, TruncatedStreamError
from airflow_agentchat.models import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ResponseFunctionCall,
    ResponseToolCall,
    TokenLogprob,
    Usage,
)
from airflow_agentchat.redaction import redact
from airflow_agentchat.wire_errors import error_from_response, load_json

__all__ = ["ChunkFolder", "aiter_chunks", "fold_chunks", "iter_chunks"]

_DONE = "[DONE]"
_SNIPPET = 120


class _ChunkParser:
    """Bytes in, chunks out: the state shared by :func:`iter_chunks` and :func:`aiter_chunks`."""

    def __init__(self, secret: str | None, max_event_bytes: int | None = None) -> None:
        self.secret = secret
        self.max_event_bytes = max_event_bytes
        self._partial = 0  # bytes of the line not yet ended
        self._event = 0  # characters of the lines of the event not yet dispatched
        self.done = False
        self._utf8 = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._lines = SSELineDecoder()
        self._events = SSEDecoder()
        self._finished: dict[int, bool] = {}

    def feed(self, data: bytes) -> Iterator[ChatCompletionChunk]:
        """Yield the chunks completed by ``data``; a generator so chunks before an error still arrive."""
        if self.max_event_bytes is not None:
            self._bound(data)
        text = self._utf8.decode(data)
        if text:
            yield from self._lines_to_chunks(self._lines.decode(text))

    def _bound(self, data: bytes) -> None:
        """Refuse an event that grows past ``max_event_bytes`` before the line decoder holds it all."""
        end = max(data.rfind(b"\n"), data.rfind(b"\r"))
        self._partial = self._partial + len(data) if end < 0 else len(data) - end - 1
        limit = self.max_event_bytes or 0
        if self._event + self._partial > limit:
            raise ResponseTooLargeError.over("One stream event", "max_event_bytes", limit)

    def close(self) -> Iterator[ChatCompletionChunk]:
        """End of body: flush the decoders, then decide whether the stream was complete."""
        if not self.done:
            text = self._utf8.decode(b"", final=True)
            lines = (self._lines.decode(text) if text else []) + self._lines.flush()
            yield from self._lines_to_chunks(lines)
        if self.done:
            return
        if not self._finished or not all(self._finished.values()):
            pending = sorted(i for i, finished in self._finished.items() if not finished)
            detail = f"choices {pending} have no finish_reason" if pending else "no choices arrived"
            raise TruncatedStreamError(f"Stream ended without data: [DONE] ({detail})")

    def _lines_to_chunks(self, lines: list[str]) -> Iterator[ChatCompletionChunk]:
        for line in lines:
            self._event = self._event + len(line) if line else 0
            event = self._events.decode(line)
            if event is None or not event.data.strip():
                continue  # not a dispatch, or an event without data (retry-only, ping, id-only)
            if event.data == _DONE:
                self.done = True
                return
            chunk = self._parse(event.data, event.event)
            for choice in chunk.choices:
                self._finished[choice.index] = self._finished.get(choice.index, False) or bool(choice.finish_reason)
            yield chunk

    def _parse(self, data: str, event_type: str) -> ChatCompletionChunk:
        try:
            chunk = ChatCompletionChunk.model_validate_json(data)
        except ValidationError:
            chunk = None
        extra = chunk.__pydantic_extra__ if chunk is not None else None
        if chunk is not None and event_type != "error" and not _looks_like_error(extra, chunk):
            return chunk
        what = "is not a chat completion chunk"
        try:
            body: Any = load_json(data)
        except ValueError:
            body, what = None, "is not valid JSON"
        if event_type == "error" or (isinstance(body, dict) and _looks_like_error(body, chunk)):
            raise self._error(data)
        # Redact before cutting, so a key that straddles the cut cannot leak in part.
        raise StreamError(f"Stream event data {what}: {redact(data, self.secret)[:_SNIPPET]!r}", retryable=True)

    def _error(self, data: str) -> StreamError:
        # error_from_response reads every error shape and redacts every field it takes from the event.
        api = error_from_response(500, {}, data.encode(), secret=self.secret)
        parts = [f"code={api.code}"] if api.code else []
        if api.request_id:
            parts.append(f"request_id={api.request_id}")
        suffix = f" ({', '.join(parts)})" if parts else ""
        return StreamError(redact(f"Error event in stream: {api.message}{suffix}", self.secret))


def _looks_like_error(fields: dict[str, Any] | None, chunk: ChatCompletionChunk | None) -> bool:
    """Whether an event's top-level keys are an error body rather than a chunk with extra keys."""
    if not fields:
        return False
    if fields.get("error") is not None or fields.get("detail") is not None:
        return True
    # {"id": "too_many_requests", "message": ..., "request_id": ...}: no choices, a message.
    return "message" in fields and "choices" not in fields and (chunk is None or not chunk.choices)


def _transport_error(exc: httpx.RequestError, secret: str | None) -> StreamError:
    return StreamError(redact(f"Stream broke while reading: {type(exc).__name__}: {exc}", secret), retryable=True)


def iter_chunks(
    response: httpx.Response,
    *,
    secret: str | None = None,
    body: Iterable[bytes] | None = None,
    max_event_bytes: int | None = None,
) -> Iterator[ChatCompletionChunk]:
    """Yield the chunks of an open streaming response until ``[DONE]``.

    Raises :class:`StreamError` on an error event, undecodable data or a broken connection, and
    :class:`TruncatedStreamError` when the body ends early. ``secret`` is scrubbed from every message.
    ``body`` replaces ``response.iter_bytes()`` (the hook passes its size- and deadline-bounded reader);
    an event longer than ``max_event_bytes`` raises :class:`ResponseTooLargeError` before it is held whole.
    """
    parser = _ChunkParser(secret, max_event_bytes)
    try:
        for data in response.iter_bytes() if body is None else body:
            yield from parser.feed(data)
            if parser.done:
                return
    except httpx.RequestError as exc:
        raise _transport_error(exc, secret) from exc
    yield from parser.close()


async def aiter_chunks(
    response: httpx.Response,
    *,
    secret: str | None = None,
    body: AsyncIterable[bytes] | None = None,
    max_event_bytes: int | None = None,
) -> AsyncIterator[ChatCompletionChunk]:
    """The async twin of :func:`iter_chunks` (same rules, same errors)."""
    parser = _ChunkParser(secret, max_event_bytes)
    try:
        async for data in response.aiter_bytes() if body is None else body:
            for chunk in parser.feed(data):
                yield chunk
            if parser.done:
                return
    except httpx.RequestError as exc:
        raise _transport_error(exc, secret) from exc
    for chunk in parser.close():
        yield chunk


class _ToolCallParts:
    __slots__ = ("arguments", "extra", "id", "name", "type")

    def __init__(self) -> None:
        self.id: str | None = None
        self.type: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []
        self.extra: dict[str, Any] = {}


class _ChoiceParts:
    __slots__ = (
        "content",
        "finish_reason",
        "lp_content",
        "lp_refusal",
        "reasoning",
        "refusal",
        "role",
        "tools",
    )

    def __init__(self) -> None:
        self.role: str | None = None
        self.content: list[str] | None = None
        self.refusal: list[str] = []
        self.reasoning: list[str] = []
        self.tools: dict[int, _ToolCallParts] = {}
        self.finish_reason: str | None = None
        self.lp_content: list[TokenLogprob] | None = None
        self.lp_refusal: list[TokenLogprob] | None = None

    def tool_slot(self, call: ResponseToolCall) -> _ToolCallParts:
        """The call a delta continues: by ``index``, or (servers that omit it) by ``id``, else the last."""
        key = call.index
        if key is None:
            key = next((k for k, part in self.tools.items() if call.id and part.id == call.id), None)
        if key is None:
            last = max(self.tools, default=-1)
            key = last + 1 if call.id or last < 0 else last
        return self.tools.setdefault(key, _ToolCallParts())

    def message(self) -> AssistantMessage:
        calls = [
            ResponseToolCall(
                id=parts.id,
                type=parts.type or "function",
                function=ResponseFunctionCall(name=parts.name, arguments="".join(parts.arguments)),
                **parts.extra,
            )
            for _, parts in sorted(self.tools.items())
        ]
        content = "".join(self.content) if self.content is not None else None
        if content == "" and calls:
            content = None  # the empty first delta of a tool-only answer, not an empty answer
        return AssistantMessage(
            role=self.role or "assistant",
            content=content,
            refusal="".join(self.refusal) or None,
            reasoning_content="".join(self.reasoning) or None,
            tool_calls=calls or None,
        )


class ChunkFolder:
    """Fold stream chunks into the ``ChatCompletion`` the same request would have returned unstreamed.

    Fragments are collected in lists and joined once in :meth:`result`, so folding is linear in the size
    of the answer however many chunks it came in. Folded tool calls carry no ``index`` (the unstreamed
    shape); they are listed in index order.
    """

    _HEADER = ("id", "model", "created", "system_fingerprint")
    _BLOCKS = ("retrieval", "functions", "guardrails", "citations")

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceParts] = {}
        self._header: dict[str, Any] = {}
        self._blocks: dict[str, Any] = {}
        self._usage: Usage | None = None

    def add(self, chunk: ChatCompletionChunk) -> None:
        for name in self._HEADER:
            value = getattr(chunk, name)
            if value and name not in self._header:
                self._header[name] = value
        for name in self._BLOCKS:
            value = getattr(chunk, name)
            if value is not None:
                self._blocks[name] = value
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices:
            parts = self._choices.setdefault(choice.index, _ChoiceParts())
            delta = choice.delta
            if delta.role and parts.role is None:
                parts.role = delta.role
            if delta.content is not None:
                parts.content = parts.content or []
                parts.content.append(delta.content)
            if delta.refusal:
                parts.refusal.append(delta.refusal)
            if delta.reasoning_content:
                parts.reasoning.append(delta.reasoning_content)
            for call in delta.tool_calls or ():
                slot = parts.tool_slot(call)
                slot.id = slot.id or call.id
                slot.type = slot.type or call.type
                slot.name = slot.name or call.function.name
                if call.function.arguments:
                    slot.arguments.append(call.function.arguments)
                if call.__pydantic_extra__:
                    slot.extra.update(call.__pydantic_extra__)
            if choice.finish_reason:
                parts.finish_reason = choice.finish_reason
            if choice.logprobs is not None:
                if choice.logprobs.content is not None:
                    parts.lp_content = parts.lp_content or []
                    parts.lp_content.extend(choice.logprobs.content)
                if choice.logprobs.refusal is not None:
                    parts.lp_refusal = parts.lp_refusal or []
                    parts.lp_refusal.extend(choice.logprobs.refusal)

    @property
    def complete(self) -> bool:
        """Every choice seen has a finish reason (and at least one choice was seen)."""
        return bool(self._choices) and all(parts.finish_reason for parts in self._choices.values())

    def result(self) -> ChatCompletion:
        choices = [
            Choice(
                index=index,
                message=parts.message(),
                finish_reason=parts.finish_reason,
                logprobs=(
                    ChoiceLogprobs(content=parts.lp_content, refusal=parts.lp_refusal)
                    if parts.lp_content is not None or parts.lp_refusal is not None
                    else None
                ),
            )
            for index, parts in sorted(self._choices.items())
        ]
        return ChatCompletion(
            **self._header,
            **self._blocks,
            object="chat.completion",
            choices=choices,
            usage=self._usage,
        )


def fold_chunks(chunks: Iterable[ChatCompletionChunk]) -> ChatCompletion:
    """Fold a whole stream (e.g. ``fold_chunks(iter_chunks(response))``) into one ``ChatCompletion``."""
    folder = ChunkFolder()
    for chunk in chunks:
        folder.add(chunk)
    return folder.result()
