"""FastAPI app of the Agent Chat page, mounted by the Airflow API server under ``/agentchat``.

Routes (all relative to the mount point)::

    GET  /                                   the page (HTML; model output is rendered with textContent)
    GET  /assets/{name}                      its script and style sheet
    GET  /api/connections                    agentchat connections: id, endpoint, model, has_key (never the key)
    GET  /api/schema                         JSON schema of ChatCompletionRequest (the form is generated from it)
    POST /api/validate                       check a request and build its operator snippet; sends nothing
    POST /api/connections/{connection_id}/chat
                                             send it through AgentChatHook; NDJSON events when stream is on

Security. Plugin routes get no authentication from Airflow by default, so every route here depends on the
API server's own ``requires_access_connection``: the caller must be a signed-in Airflow user (JWT cookie of
the UI, or a bearer token) with read access to connections; ``/chat`` also needs the rights Airflow asks for
``POST /api/v2/connections/test`` (create + read on that connection), because it spends that connection's key.
State-changing routes accept only ``application/json`` bodies from the same origin (a cross-site form cannot
send JSON without a CORS preflight, which this app never grants), and every response is scrubbed of the
connection's key before it leaves, on top of the hook's own redaction. The page carries a strict CSP
(scripts and styles from this app only, framing by the Airflow UI only).

Load. The API server's worker threads also serve Airflow's own API, so a chat never holds one while it waits
for the agent: ``/chat`` uses the hook's async path on the event loop, at most ``[agentchat]
page_chats_per_user`` chats per user are in flight (429 beyond) and each ends at ``page_chat_timeout`` (see
:mod:`airflow_agentchat.plugins.limits`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from airflow_agentchat.exceptions import AgentChatError, InvalidRequestError
from airflow_agentchat.plugins.chat import (
    completion_payload,
    error_payload,
    invalid_payload,
    list_connections,
    operator_snippet,
)
from airflow_agentchat.plugins.limits import ChatSlots, PageLimits

#: Fields shown in the main form; the advanced section lists every other field of the schema.
COMMON_FIELDS = ("model", "temperature", "max_tokens", "stream", "tools")
_ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
_MAX_BODY = 1_000_000
_UNPROCESSABLE = 422  # the constant was renamed across Starlette versions
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_PAGE_HEADERS = {
    **_SECURITY_HEADERS,
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "SAMEORIGIN",
}


def _read_access() -> Any:
    from airflow.api_fastapi.core_api.security import requires_access_connection

    return Depends(requires_access_connection(method="GET"))


def _current_user() -> Any:
    from airflow.api_fastapi.core_api.security import get_user

    return Depends(get_user)


def _use_access() -> list[Any]:
    """What Airflow itself requires to test a connection: create, plus read on that connection."""
    from airflow.api_fastapi.core_api.security import requires_access_connection

    return [Depends(requires_access_connection(method="GET")), Depends(requires_access_connection(method="POST"))]


async def same_origin_json(request: Request) -> None:
    """Refuse bodies a cross-site page could forge: only same-origin ``application/json`` is accepted."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Send the body as application/json.")
    site = request.headers.get("sec-fetch-site")
    if site and site not in ("same-origin", "none"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"Cross-site request refused (sec-fetch-site: {site}).")
    if site == "same-origin":
        # The browser vouches for it; comparing Origin with Host would refuse reverse proxies that rewrite Host.
        return
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("x-forwarded-host") or request.headers.get("host") or ""
        if origin == "null" or urlsplit(origin).netloc.lower() != host.split(",")[0].strip().lower():
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Cross-origin request refused.")


def _json(payload: Any, status_code: int = 200, secret: str | None = None) -> Response:
    text = json.dumps(payload, ensure_ascii=False, default=str)
    if secret:
        text = text.replace(secret, "***")
    return Response(text, status_code=status_code, media_type="application/json", headers=_SECURITY_HEADERS)


async def _read_body(request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(body, body["request"])``, parsed by hand after the auth dependencies ran.

    FastAPI would parse a declared body *before* running dependencies, answering 422 to a caller who is not
    even signed in; reading it here keeps "401 first" for every route.
    """
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "Request body larger than 1 MB.")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"Body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, 'Body must be {"request": {...}}.')
    return body, dict(body["request"])


def _validate(request_body: dict[str, Any], hook: Any = None) -> Any:
    """The request as ``hook`` will send it (its connection's ``model`` applied); without a hook, as is."""
    params = dict(request_body)
    messages = params.pop("messages", None)
    if hook is not None:
        return hook.build_request(messages, **params)
    from airflow_agentchat.models import build_request

    return build_request(messages, **params)


def _snippet_source(validated: Any, request_body: dict[str, Any]) -> dict[str, Any]:
    """The fields of the operator snippet: what the form set (a model the connection supplies stays there)."""
    fields = validated.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    if "model" not in request_body:
        fields.pop("model", None)
    return fields


def _hook(connection_id: str) -> tuple[Any, str | None]:
    """A hook whose connection settings are read and checked; 404 for an unknown connection id."""
    from airflow_agentchat.compat import airflow_not_found_exception
    from airflow_agentchat.hooks.agent_chat import AgentChatHook

    AirflowNotFoundException = airflow_not_found_exception()

    hook = AgentChatHook(connection_id)
    try:
        settings = hook.settings
    except AirflowNotFoundException:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Connection {connection_id!r} is not defined.") from None
    except AgentChatError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return hook, settings.api_key


def _preview_hook(connection_id: str | None) -> Any:
    """The hook of the connection a preview names, or ``None`` when there is no usable one (nothing is sent)."""
    if not connection_id:
        return None
    try:
        return _hook(connection_id)[0]
    except HTTPException:
        return None


def create_app() -> FastAPI:
    """Build the app (called by :class:`~airflow_agentchat.plugins.agent_chat.LazyASGIApp` on first use)."""
    read = _read_access()
    limits = PageLimits.from_config()
    slots = ChatSlots(limits.chats_per_user)
    current_user = _current_user()
    app = FastAPI(
        title="Agent Chat",
        description="Try agent chat completion requests through Airflow connections.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[read],  # no route of this app is reachable without a signed-in user
    )
    static = resources.files("airflow_agentchat.plugins") / "static"

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> Response:
        if not request.url.path.endswith("/"):
            return RedirectResponse(str(request.url.replace(path=request.url.path + "/")))
        return HTMLResponse((static / "index.html").read_text("utf-8"), headers=_PAGE_HEADERS)

    @app.get("/assets/{name}")
    def asset(name: str) -> Response:
        if name not in _ASSETS:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "No such asset.")
        return Response((static / name).read_bytes(), media_type=_ASSETS[name], headers=_SECURITY_HEADERS)

    @app.get("/api/connections")
    def connections() -> Response:
        return _json({"connections": list_connections()})

    @app.get("/api/schema")
    def schema() -> Response:
        from airflow_agentchat.models import DEFAULT_MODEL, ChatCompletionRequest

        return _json(
            {
                "schema": ChatCompletionRequest.model_json_schema(),
                "common": list(COMMON_FIELDS),
                "default_model": DEFAULT_MODEL,
            }
        )

    @app.post("/api/validate", dependencies=[Depends(same_origin_json)])
    async def validate(request: Request) -> Response:
        body, request_body = await _read_body(request)
        conn_id = body.get("conn_id") if isinstance(body.get("conn_id"), str) else None
        hook = await run_in_threadpool(_preview_hook, conn_id)
        try:
            validated = _validate(request_body, hook)
        except InvalidRequestError as exc:
            return _json(invalid_payload(exc), _UNPROCESSABLE)
        return _json(
            {
                "ok": True,
                "body": validated.to_body(),
                "snippet": operator_snippet(
                    str(conn_id or "agentchat_default"), _snippet_source(validated, request_body)
                ),
            }
        )

    @app.post("/api/connections/{connection_id}/chat", dependencies=[*_use_access(), Depends(same_origin_json)])
    async def chat(connection_id: str, request: Request, user: Any = current_user) -> Response:
        _, request_body = await _read_body(request)
        who = str(user.get_id())
        if not slots.take(who):
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"You already have {limits.chats_per_user} chats in flight on this API server (the limit, "
                f"[agentchat] page_chats_per_user): wait for one to finish.",
            )
        slot = _Slot(slots, who)
        try:
            return await _chat(connection_id, request_body, slot, limits.chat_timeout)
        finally:
            slot.give_back()  # a stream's response owns the slot now; this is then a no-op

    return app


class _Slot:
    """One chat's place in :class:`ChatSlots`, given back exactly once by whoever holds it last."""

    def __init__(self, slots: ChatSlots, user: str) -> None:
        self._slots: ChatSlots | None = slots
        self._user = user

    def hand_over(self) -> _Slot:
        moved = _Slot.__new__(_Slot)
        moved._slots, moved._user, self._slots = self._slots, self._user, None
        return moved

    def give_back(self) -> None:
        if self._slots is not None:
            slots, self._slots = self._slots, None
            slots.give_back(self._user)


class _SlotStreamingResponse(StreamingResponse):
    """A stream that gives its chat slot back when the response ends, however it ends.

    The generator's own ``finally`` does not run when the client leaves before the first chunk is asked for.
    """

    def __init__(self, content: Any, slot: _Slot, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._slot = slot

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.give_back()


def _deadline_payload(timeout: float) -> dict[str, Any]:
    return {
        "ok": False,
        "error": {
            "kind": "deadline_exceeded",
            "retryable": True,
            "message": f"No complete answer within {timeout:g} s (the page's limit, [agentchat] page_chat_timeout).",
            "attempts": None,
        },
    }


async def _chat(connection_id: str, request_body: dict[str, Any], slot: _Slot, timeout: float) -> Response:
    """Validate, send through the hook's async path within ``timeout``; map errors to the page's statuses."""
    import anyio

    hook, secret = await run_in_threadpool(_hook, connection_id)  # a connection lookup, no network call
    try:
        validated = _validate(request_body, hook)  # validated once: what the page shows is what is sent
    except InvalidRequestError as exc:
        return _json(invalid_payload(exc), _UNPROCESSABLE, secret)
    head = {
        "request": validated.to_body(),
        "snippet": operator_snippet(connection_id, _snippet_source(validated, request_body)),
    }
    if validated.stream:
        return _SlotStreamingResponse(
            _stream_events(hook, secret, validated, head, timeout),
            slot.hand_over(),
            media_type="application/x-ndjson",
            headers={**_SECURITY_HEADERS, "X-Accel-Buffering": "no"},
        )
    started = time.perf_counter()
    try:
        with anyio.fail_after(timeout):
            completion = await hook.asend(validated)
    except AgentChatError as exc:
        return _json({**error_payload(exc), **head}, status.HTTP_502_BAD_GATEWAY, secret)
    except TimeoutError:
        return _json({**_deadline_payload(timeout), **head}, status.HTTP_504_GATEWAY_TIMEOUT, secret)
    finally:
        with anyio.CancelScope(shield=True):
            await hook.aclose()
    payload = completion_payload(completion, latency_ms=(time.perf_counter() - started) * 1000)
    return _json({**payload, **head}, secret=secret)


async def _stream_events(
    hook: Any, secret: str | None, request: Any, head: dict[str, Any], timeout: float
) -> AsyncIterator[bytes]:
    """NDJSON events: ``start``, ``open`` (attempts, request id), one ``delta`` per chunk, then ``result`` or ``error``.

    Async, on the API server's event loop: a slow agent holds no server thread. Each wait for the agent is
    bounded by what is left of ``timeout``; nothing is yielded while a deadline scope is open.
    """
    import anyio

    from airflow_agentchat.streaming import ChunkFolder

    def line(event: dict[str, Any]) -> bytes:
        text = json.dumps(event, ensure_ascii=False, default=str)
        if secret:
            text = text.replace(secret, "***")
        return (text + "\n").encode()

    yield line({"type": "start", **head})
    folder = ChunkFolder()
    started = time.perf_counter()
    deadline = anyio.current_time() + timeout
    chunks = 0
    try:
        async with AsyncExitStack() as stack:
            with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                opened, stream = await stack.enter_async_context(hook.aopen_stream(request))
            yield line({"type": "open", **opened})
            while True:
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    chunk = await anext(stream, None)
                if chunk is None:
                    break
                chunks += 1
                folder.add(chunk)
                event: dict[str, Any] = {"type": "delta", "text": chunk.text}
                calls = [
                    c.model_dump(mode="json", exclude_none=True)
                    for ch in chunk.choices
                    for c in ch.delta.tool_calls or ()
                ]
                if calls:
                    event["tool_calls"] = calls
                if chunk.text or calls:
                    yield line(event)
        completion = folder.result()
    except AgentChatError as exc:
        yield line({"type": "error", **error_payload(exc), "chunks": chunks})
        return
    except TimeoutError:
        yield line({"type": "error", **_deadline_payload(timeout), "chunks": chunks})
        return
    finally:
        with anyio.CancelScope(shield=True):
            await hook.aclose()
    payload = completion_payload(completion, latency_ms=(time.perf_counter() - started) * 1000)
    payload["meta"].update(opened, chunks=chunks)
    yield line({"type": "result", **payload})
