"""Read a response body within the connection's limits: its decoded size and the attempt's deadline.

A hostile or broken server must cost bounded memory and bounded time. httpx's own readers hold a whole body
(``read``), and its gzip decoder expands each network read in one go (a few hundred KiB of a gzip bomb become
hundreds of MB), so the hook reads the raw stream and undoes ``Content-Encoding`` here, with ``zlib``'s
``max_length``: no more than ``_PIECE`` decoded bytes exist at a time beyond what was kept, and reading stops
with :class:`ResponseTooLargeError` as soon as the decoded total passes ``max_response_bytes``.

Between two reads the attempt's :class:`Deadline` is checked, so a server that trickles a byte at a time
(each read well inside the read timeout) still ends within the deadline plus one read timeout. The wait for
the response headers is cut by :mod:`airflow_agentchat.hooks.deadline`.

gzip and deflate are decoded (what httpx decodes without optional packages); another encoding is passed on
as it came, and then fails to parse like any body that is not a completion.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import AsyncIterator, Iterator

import httpx

from airflow_agentchat.exceptions import InvalidResponseError, NetworkTimeoutError, ResponseTooLargeError

_PIECE = 64 * 1024


class Deadline:
    """The moment one attempt must be over by (``time.monotonic()``), and the error that says so."""

    __slots__ = ("at", "seconds", "url")

    def __init__(self, seconds: float, url: str) -> None:
        self.seconds = seconds
        self.url = url
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def error(self) -> NetworkTimeoutError:
        return NetworkTimeoutError(
            f"Timed out talking to {self.url}: the attempt took longer than its deadline of {self.seconds:g} s "
            "(connection extra attempt_deadline)"
        )

    def check(self) -> None:
        if time.monotonic() >= self.at:
            raise self.error()


class _Inflate:
    """One gzip or deflate layer, never producing more than ``_PIECE`` bytes per step."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._raw_deflate_tried = encoding != "deflate"
        wbits = zlib.MAX_WBITS | 16 if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._z = zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data and not self._z.eof:
            try:
                out = self._z.decompress(data, _PIECE)
            except zlib.error:
                if self._raw_deflate_tried:
                    raise
                # "deflate" without its zlib header, as some servers send it (httpx accepts both too).
                self._raw_deflate_tried = True
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            self._raw_deflate_tried = True
            data = self._z.unconsumed_tail
            if out:
                yield out

    def flush(self) -> Iterator[bytes]:
        if not self._z.eof and self._raw_deflate_tried:
            out = self._z.flush(_PIECE)
            if out:
                yield out


class BodyReader:
    """Raw body bytes in, decoded bytes out, counted against ``limit``; the deadline checked per read."""

    def __init__(self, response: httpx.Response, limit: int, deadline: Deadline) -> None:
        self.response = response
        self.limit = limit
        self.deadline = deadline
        self.size = 0
        encodings = [e.strip().lower() for e in response.headers.get("content-encoding", "").split(",")]
        self._layers = [_Inflate(e) for e in reversed(encodings) if e in ("gzip", "x-gzip", "deflate")]

    def decode(self, raw: bytes) -> Iterator[bytes]:
        self.deadline.check()
        try:
            yield from self._count(self._through(raw, 0))
        except zlib.error as exc:
            raise self._undecodable(exc) from exc

    def flush(self) -> Iterator[bytes]:
        try:
            for index in range(len(self._layers)):
                for piece in self._layers[index].flush():
                    yield from self._count(self._through(piece, index + 1))
        except zlib.error as exc:
            raise self._undecodable(exc) from exc

    def _through(self, data: bytes, start: int) -> Iterator[bytes]:
        if start == len(self._layers):
            if data:
                yield data
            return
        for piece in self._layers[start].feed(data):
            yield from self._through(piece, start + 1)

    def _count(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            self.size += len(piece)
            if self.size > self.limit:
                raise ResponseTooLargeError.over("The response body (decoded)", "max_response_bytes", self.limit)
            yield piece

    def _undecodable(self, exc: zlib.error) -> InvalidResponseError:
        encoding = self.response.headers.get("content-encoding")
        return InvalidResponseError(self.response.status_code, f"Body is not valid {encoding}: {exc}")


def iter_body(response: httpx.Response, limit: int, deadline: Deadline) -> Iterator[bytes]:
    """The decoded body of a sync response, piece by piece, within ``limit`` and ``deadline``."""
    reader = BodyReader(response, limit, deadline)
    stream = response.stream
    assert isinstance(stream, httpx.SyncByteStream)
    for raw in stream:
        yield from reader.decode(raw)
    yield from reader.flush()


async def aiter_body(response: httpx.Response, limit: int, deadline: Deadline) -> AsyncIterator[bytes]:
    """Async twin of :func:`iter_body`."""
    reader = BodyReader(response, limit, deadline)
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    async for raw in stream:
        for piece in reader.decode(raw):
            yield piece
    for piece in reader.flush():
        yield piece


def read_body(response: httpx.Response, limit: int, deadline: Deadline, *, cut: bool = False) -> bytes:
    """The whole decoded body; past ``limit`` it raises, or with ``cut`` returns the first ``limit`` bytes
    (enough of an error page to say what went wrong)."""
    pieces: list[bytes] = []
    try:
        for piece in iter_body(response, limit, deadline):
            pieces.append(piece)
    except ResponseTooLargeError:
        if not cut:
            raise
    return b"".join(pieces)[:limit]


async def aread_body(response: httpx.Response, limit: int, deadline: Deadline, *, cut: bool = False) -> bytes:
    """Async twin of :func:`read_body`."""
    stream = response.stream
    if "content-encoding" not in response.headers and isinstance(stream, httpx.AsyncByteStream):
        # The batch's hot path: an identity body, counted as it comes with no decoder layers in between.
        pieces: list[bytes] = []
        size = 0
        async for raw in stream:
            deadline.check()
            size += len(raw)
            if size > limit:
                if not cut:
                    raise ResponseTooLargeError.over("The response body (decoded)", "max_response_bytes", limit)
                pieces.append(raw)
                break
            pieces.append(raw)
        return b"".join(pieces)[:limit]
    pieces = []
    try:
        async for piece in aiter_body(response, limit, deadline):
            pieces.append(piece)
    except ResponseTooLargeError:
        if not cut:
            raise
    return b"".join(pieces)[:limit]
