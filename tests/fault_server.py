"""An OpenAI-style chat completion server that misbehaves on purpose, for batch tests under faults and kills.

Unlike the dev server it knows nothing of the provider: it speaks plain HTTP/1.1 with keep-alive on an
asyncio loop in a thread (fast enough for a thousand requests in a few seconds) and answers ``Echo: <last
message>``, as a stream when the request asks for one. On the *first* attempt of a prompt it injects a fault
with probability ``fault_rate`` (a deterministic choice per prompt from ``seed``), drawn from ``FAULTS``:

* ``429``: rate limited, with ``retry-after: <retry_after>``; the moment it was sent is recorded as a pause;
* ``500``: a JSON error; ``502``: an HTML page from a "proxy"; ``503``: a JSON error;
* ``reset``: headers and half the body, then a TCP reset;
* ``slow``: the answer comes ``slow_seconds`` late (past the client's timeout);
* ``truncated``: a stream that ends without a finish reason or ``[DONE]`` (a non-stream body cut short);
* ``malformed``: a 200 whose JSON body is cut off.

It records, per prompt, how many requests arrived, every arrival time, when each successful answer was
written, and every announced 429 pause, so tests can compare what the client says with what really happened.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FAULTS = ("429", "500", "502", "503", "reset", "slow", "truncated", "malformed")


@dataclass
class FaultServer:
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    seed: int = 20260801
    latency: float = 0.0
    slow_seconds: float = 2.0
    retry_after: float = 1.0
    counts: Counter = field(default_factory=Counter)  # prompt -> requests received
    arrivals: list[tuple[float, str]] = field(default_factory=list)  # (time.time(), prompt)
    answered: list[tuple[float, str]] = field(default_factory=list)  # successful answers written
    pauses: list[tuple[float, float]] = field(default_factory=list)  # (time a 429 was sent, retry-after)
    injected: Counter = field(default_factory=Counter)  # fault kind -> times injected
    hold_after: int | None = None  # once this many answers went out, hold requests until release() ...
    hold_prefix: str = ""  # ... whose prompt starts with this

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._serial = 0
        self._released: asyncio.Event | None = None
        self.port = 0

    # --------------------------------------------------------------------------------------- control

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultServer:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._released = asyncio.Event()
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=512))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=serve, name="fault-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def release(self) -> None:
        """Let held requests (see ``hold_after``) through, and every later one."""
        self.hold_after = None
        if self._loop is not None and self._released is not None:
            self._loop.call_soon_threadsafe(self._released.set)

    def fault_for(self, prompt: str) -> str | None:
        """The fault the first attempt of ``prompt`` gets (the same for a given seed), or None."""
        rng = random.Random(f"{self.seed}:{prompt}")
        return rng.choice(self.faults) if rng.random() < self.fault_rate else None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counts": Counter(self.counts),
                "arrivals": list(self.arrivals),
                "answered": list(self.answered),
                "pauses": list(self.pauses),
                "injected": Counter(self.injected),
            }

    # ------------------------------------------------------------------------------------------ HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                if not await self._answer(body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # the server is stopping; ending quietly keeps asyncio from logging it
            pass
        finally:
            writer.close()

    async def _answer(self, body: bytes, writer: asyncio.StreamWriter) -> bool:
        """Write one response; False when the connection must not be used again."""
        try:
            request = json.loads(body)
            prompt = str(request["messages"][-1]["content"])
        except (ValueError, KeyError, IndexError, TypeError):
            writer.write(_response(400, b'{"error": {"message": "bad request body"}}'))
            return True
        stream = bool(request.get("stream"))
        now = time.time()
        with self._lock:
            self.counts[prompt] += 1
            first = self.counts[prompt] == 1
            self.arrivals.append((now, prompt))
            self._serial += 1
            serial = self._serial
        fault = self.fault_for(prompt) if first else None
        if fault is not None:
            with self._lock:
                self.injected[fault] += 1
        held = (
            self.hold_after is not None
            and len(self.answered) >= self.hold_after
            and prompt.startswith(self.hold_prefix)
        )
        if held and self._released is not None:
            await self._released.wait()
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault == "429":
            with self._lock:
                self.pauses.append((time.time(), self.retry_after))
            error = b'{"error": {"message": "Too many requests", "code": "rate_limit_exceeded"}}'
            writer.write(_response(429, error, {"retry-after": f"{self.retry_after:g}"}))
            return True
        if fault in ("500", "503"):
            writer.write(_response(int(fault), b'{"error": {"message": "upstream trouble", "type": "server_error"}}'))
            return True
        if fault == "502":
            page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
            writer.write(_response(502, page, {"content-type": "text/html"}))
            return True
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        if stream:
            return await self._stream(writer, serial, prompt, fault)
        completion = _completion(serial, prompt)
        if fault == "malformed":
            writer.write(_response(200, completion[: len(completion) // 2]))
            return True
        if fault in ("reset", "truncated"):
            whole = _response(200, completion)
            writer.write(whole[: len(whole) - len(completion) // 2])
            await writer.drain()
            if fault == "reset":
                _reset(writer)
            else:
                writer.close()
            return False
        writer.write(_response(200, completion))
        await writer.drain()
        with self._lock:
            self.answered.append((time.time(), prompt))
        return True

    async def _stream(self, writer: asyncio.StreamWriter, serial: int, prompt: str, fault: str | None) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"x-request-id: req_fault_%d\r\n\r\n" % serial
        )
        base = {"id": f"chatcmpl-{serial}", "object": "chat.completion.chunk", "created": 1, "model": "fault"}
        events = [
            json.dumps(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                }
            ),
            json.dumps(
                {**base, "choices": [{"index": 0, "delta": {"content": f"Echo: {prompt}"}, "finish_reason": None}]}
            ),
            json.dumps(
                {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": _usage(prompt)}
            ),
            "[DONE]",
        ]
        if fault == "malformed":
            events[1] = events[1][: len(events[1]) // 2]
        elif fault in ("truncated", "reset"):
            events = events[:2]
        writer.write(b"".join(_chunk(b"data: " + event.encode() + b"\n\n") for event in events))
        if fault == "reset":
            await writer.drain()
            _reset(writer)
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        if fault is None:
            with self._lock:
                self.answered.append((time.time(), prompt))
        return True


def _usage(prompt: str) -> dict[str, int]:
    completion = len(prompt.split()) + 1
    return {"prompt_tokens": len(prompt.split()), "completion_tokens": completion, "total_tokens": 2 * completion - 1}


def _completion(serial: int, prompt: str) -> bytes:
    return json.dumps(
        {
            "id": f"chatcmpl-{serial}",
            "object": "chat.completion",
            "created": 1,
            "model": "fault",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": f"Echo: {prompt}"}, "finish_reason": "stop"}
            ],
            "usage": _usage(prompt),
        }
    ).encode()


_REASONS = {200: b"OK", 400: b"Bad Request", 429: b"Too Many Requests", 500: b"Internal Server Error"}


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error"))]
    merged = {"content-type": "application/json", **(headers or {}), "content-length": str(len(body))}
    lines += [f"{name}: {value}".encode() for name, value in merged.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN: a connection reset in the middle of the body."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
