"""The dev server's FastAPI app: the completion route, fault delivery, stats and the ``/_dev`` control API.

Routes
------
``POST /api/v1/chat/completions`` (and ``/v1/chat/completions``)
    The agent endpoint (``?agent=true`` accepted and ignored). Answers follow the rule in
    :mod:`airflow_agentchat.devserver.answers`; faults follow :mod:`airflow_agentchat.devserver.faults`.
``GET /_dev/health`` (alias ``GET /health``)
    ``{"status": "ok"}``.
``GET /_dev/stats`` (``?timestamps=false`` leaves the timestamps out)
    ``{"total", "by_status": {"200": n, "reset": n, ...}, "by_prompt": {text: n}, "timestamps": [...],
    "faults_delivered"}``; ``timestamps`` holds the ``time.time()`` arrival of each completion request.
``POST /_dev/reset``
    Clears stats, pending faults and the prompt cache (:mod:`airflow_agentchat.devserver.cache`).
``POST /_dev/faults`` / ``GET /_dev/faults``
    Queue fault specs (an object or a list); list the pending ones.
``POST /_dev/config`` / ``GET /_dev/config``
    Set/read ``latency_ms`` (per request), ``chunk_latency_ms`` (per stream chunk) and ``api_key``
    (``null`` turns auth off). The key itself is never returned.

Order of work on a completion request: auth (401) → JSON parse (400) → stats → latency → fault →
validation (400) → answer. Every response carries ``x-request-id``.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from airflow_agentchat.devserver import responses as wire
from airflow_agentchat.devserver.answers import clean_prompt, last_user_text, make_choices, prompt_tokens
from airflow_agentchat.devserver.cache import PromptCache
from airflow_agentchat.devserver.faults import Fault, FaultQueue, parse_markers
from airflow_agentchat.devserver.validation import make_validator
from airflow_agentchat.models import DEFAULT_MODEL

STREAM_KINDS = frozenset({"truncate", "malformed", "error_event"})
REQUEST_ID_KEY = "agentchat.request_id"
TRANSPORT_KEY = "agentchat.transport"


@dataclass
class Settings:
    """Runtime knobs, changed by ``POST /_dev/config``."""

    api_key: str | None = None
    latency_ms: float = 0.0
    chunk_latency_ms: float = 0.0


@dataclass
class Stats:
    """Counters for ``GET /_dev/stats``."""

    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_prompt: Counter[str] = field(default_factory=Counter)
    timestamps: list[float] = field(default_factory=list)
    faults_delivered: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_status": dict(self.by_status),
            "by_prompt": dict(self.by_prompt),
            "timestamps": list(self.timestamps),
            "faults_delivered": self.faults_delivered,
        }


class RequestIdMiddleware:
    """Outermost ASGI layer: gives each request an id (scope + ``x-request-id`` header) and exposes the
    server transport in the scope so the ``reset`` fault can drop the connection without a response."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{self._prefix}{next(self._counter):08x}"
        scope[REQUEST_ID_KEY] = request_id
        scope[TRANSPORT_KEY] = getattr(getattr(receive, "__self__", None), "transport", None)
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


def _json(status: int, value: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(wire.dumps(value), status_code=status, media_type="application/json", headers=headers)


def _invalid(message: str, param: str | None = None) -> Response:
    return _json(400, wire.error_body(message, "invalid_request_error", None, param))


async def _reset_connection(request: Request) -> None:
    """Close the client's socket with an RST and no response (the ``reset`` fault)."""
    transport = request.scope.get(TRANSPORT_KEY)
    if transport is None:  # not running under uvicorn: best effort
        raise ConnectionResetError("devserver reset fault")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
    await asyncio.sleep(0)


class DevAgent:
    """The dev agent: its settings, stats and pending faults, and what it does with each request.

    The routes :meth:`asgi` declares only hand requests to these methods, so the behaviour reads as one class
    rather than as closures inside an app factory.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.stats = Stats()
        self.faults = FaultQueue()
        self.cache = PromptCache()
        self._validate = make_validator()

    def asgi(self) -> Any:
        """The ASGI app: thin routes over this object, wrapped in :class:`RequestIdMiddleware`."""
        app = FastAPI(title="agentchat devserver", docs_url=None, redoc_url=None, openapi_url=None)
        for path in ("/api/v1/chat/completions", "/v1/chat/completions"):
            app.add_api_route(path, self.completions, methods=["POST"], include_in_schema=False)
        for path in ("/_dev/health", "/health"):
            app.add_api_route(path, self.health, methods=["GET"])
        app.add_api_route("/_dev/stats", self.get_stats, methods=["GET"])
        app.add_api_route("/_dev/reset", self.reset, methods=["POST"])
        app.add_api_route("/_dev/faults", self.list_faults, methods=["GET"])
        app.add_api_route("/_dev/faults", self.add_faults, methods=["POST"])
        app.add_api_route("/_dev/config", self.get_config, methods=["GET"])
        app.add_api_route("/_dev/config", self.set_config, methods=["POST"])
        return RequestIdMiddleware(app)

    # ------------------------------------------------------------------------------------ the agent endpoint

    def authorized(self, request: Request) -> bool:
        if not self.settings.api_key:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.settings.api_key}".encode())

    def pick_fault(self, prompt_raw: str) -> tuple[Fault | None, float]:
        marker, marker_latency = parse_markers(prompt_raw)
        if marker is not None and (marker.times < 0 or self.stats.by_prompt[prompt_raw] <= marker.times):
            return marker, marker_latency
        return self.faults.take(prompt_raw), marker_latency

    async def completions(self, request: Request) -> Response:
        stats = self.stats
        stats.total += 1
        stats.timestamps.append(time.time())
        request_id = request.scope[REQUEST_ID_KEY]
        if not self.authorized(request):
            stats.by_status["401"] += 1
            body = wire.error_body("Incorrect API key provided.", "authentication_error", "invalid_api_key", None)
            return _json(401, body)
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            stats.by_status["400"] += 1
            return _invalid("The request body is not valid JSON.")
        messages = body.get("messages") if isinstance(body, dict) else None
        well_formed = isinstance(messages, list) and all(isinstance(m, dict) for m in messages)
        prompt_raw = last_user_text(messages) if well_formed else ""  # type: ignore[arg-type]
        stats.by_prompt[prompt_raw] += 1

        fault, latency = self.pick_fault(prompt_raw)
        latency += self.settings.latency_ms
        if fault is not None:
            extra = fault.params.get("latency_ms")
            latency += float(extra) if isinstance(extra, (int, float)) else 0.0
        if latency > 0:
            await asyncio.sleep(latency / 1000)

        streaming = isinstance(body, dict) and body.get("stream") is True
        filtered = fault is not None and fault.kind == "content_filter"  # an answer, not an error: built below
        if filtered:
            stats.faults_delivered += 1
            fault = None
        if fault is not None and not (streaming and fault.kind in STREAM_KINDS):
            stats.faults_delivered += 1
            return await self.deliver_fault(request, fault, request_id)

        problem = self._validate(body)
        if problem is not None:
            stats.by_status["400"] += 1
            return _invalid(*problem)

        prompt = clean_prompt(prompt_raw)
        choices = make_choices(body, prompt, filtered=filtered)
        model = body.get("model") or DEFAULT_MODEL
        cid = "chatcmpl-" + request_id[4:]
        created = int(time.time())
        usage = wire.usage(prompt_tokens(body["messages"]), choices)
        if b"cache_control" in raw:  # a text-only benchmark pays nothing for the cache
            usage.update(self.cache.usage(body, time.monotonic()) or {})
        extras = wire.do_extras(body, prompt, choices)
        stats.by_status["200"] += 1
        if not streaming:
            return _json(200, {**wire.completion(cid, created, model, body, choices, usage), **extras})
        if fault is not None:
            stats.faults_delivered += 1
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = self.stream_events(cid, created, model, body, choices, extras, usage if include_usage else None, fault)
        return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})

    async def stream_events(
        self,
        cid: str,
        created: int,
        model: str,
        body: dict[str, Any],
        choices: list[Any],
        extras: dict[str, Any],
        usage: dict[str, Any] | None,
        fault: Fault | None,
    ) -> AsyncIterator[bytes]:
        delay = self.settings.chunk_latency_ms / 1000
        all_chunks = list(wire.chunks(cid, created, model, body, choices, extras))
        after = -1
        if fault is not None:  # never let a stream fault slip past the finish chunk
            after = min(int(fault.params.get("after_chunks", 2)), len(all_chunks) - 1)
        for sent, chunk in enumerate(all_chunks):
            if sent == after and fault is not None:
                if fault.kind == "truncate":
                    return
                if fault.kind == "error_event":
                    message = fault.params.get("message") or "The server had an error while processing your request."
                    yield wire.sse(wire.error_body(message, "server_error", "stream_error"))
                    return
                if fault.kind == "malformed":
                    yield b'data: {"id": "' + cid.encode() + b'", "choices": [{"delta": \n\n'
            if delay:
                await asyncio.sleep(delay)
            yield wire.sse(chunk)
        if usage is not None:
            yield wire.sse(wire.usage_chunk(cid, created, model, usage))
        yield wire.SSE_DONE

    async def deliver_fault(self, request: Request, fault: Fault, request_id: str) -> Response:
        kind, params = fault.kind, fault.params
        headers = wire.fault_headers(params)
        if kind == "reset":
            self.stats.by_status["reset"] += 1
            await _reset_connection(request)
            return Response(status_code=204)
        if kind in ("malformed", "truncate"):
            self.stats.by_status["200"] += 1
            text = b'{"id": "chatcmpl-' + request_id.encode() + b'", "object": "chat.completion", "choices": [{'
            return Response(text, status_code=200, media_type="application/json", headers=headers)
        status, media_type, content = wire.fault_response(kind, params, request_id)
        self.stats.by_status[str(status)] += 1
        return Response(content, status_code=status, media_type=media_type, headers=headers)

    # ------------------------------------------------------------------------------------ the /_dev control API

    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    async def get_stats(self, timestamps: bool = True) -> Response:
        view = self.stats.as_dict()
        if not timestamps:  # long benchmarks collect millions of them
            del view["timestamps"]
        return _json(200, view)

    async def reset(self) -> dict[str, str]:
        self.stats = Stats()
        self.faults.clear()
        self.cache.clear()
        return {"status": "reset"}

    async def list_faults(self) -> Response:
        return _json(200, {"pending": self.faults.pending()})

    async def add_faults(self, request: Request) -> Response:
        try:
            specs = json.loads(await request.body())
            specs = specs if isinstance(specs, list) else [specs]
            new = [Fault.from_spec(spec) for spec in specs]
        except ValueError as exc:
            return _invalid(f"bad fault spec: {exc}")
        self.faults.add(new)
        return _json(200, {"queued": len(new), "pending": self.faults.pending()})

    def config_view(self) -> dict[str, Any]:
        return {
            "latency_ms": self.settings.latency_ms,
            "chunk_latency_ms": self.settings.chunk_latency_ms,
            "api_key_set": bool(self.settings.api_key),
        }

    async def get_config(self) -> Response:
        return _json(200, self.config_view())

    async def set_config(self, request: Request) -> Response:
        try:
            update = json.loads(await request.body())
        except ValueError:
            return _invalid("config body must be JSON")
        if not isinstance(update, dict):
            return _invalid("config body must be an object")
        for key in ("latency_ms", "chunk_latency_ms"):
            if key in update:
                value = update[key]
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                    return _invalid(f"{key} must be a number ≥ 0", key)
                setattr(self.settings, key, float(value))
        if "api_key" in update:
            key_value = update["api_key"]
            if key_value is not None and not isinstance(key_value, str):
                return _invalid("api_key must be a string or null", "api_key")
            self.settings.api_key = key_value or None
        return _json(200, self.config_view())


def create_app(settings: Settings | None = None) -> Any:
    """Build the ASGI app of a new :class:`DevAgent` (a FastAPI app wrapped in :class:`RequestIdMiddleware`)."""
    return DevAgent(settings).asgi()
