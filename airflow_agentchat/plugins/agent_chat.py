"""The "Agent Chat" Airflow plugin: a test-request page for ``agentchat`` connections inside the Airflow UI.

Registered through the ``airflow.plugins`` entry point. It adds

* a FastAPI app mounted by the API server under :data:`URL_PREFIX` (page, assets and a small JSON API, see
  :mod:`airflow_agentchat.plugins.app`), every route behind the API server's own authentication and the
  user's rights on connections;
* a nav entry (``external_views``) that shows that page inside the Airflow UI;
* a root middleware that keeps a connection test from sending a stored key anywhere the stored connection
  does not say, and lets the connection list's Test button work on ``agentchat`` connections (see
  :mod:`airflow_agentchat.plugins.connection_test`).

Plugins are imported by every Airflow process (scheduler, DAG processor, workers), not only by the API server,
so this module imports nothing heavy: the FastAPI app is built on its first request by :class:`LazyASGIApp`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, urlsplit

from airflow.plugins_manager import AirflowPlugin

from airflow_agentchat.plugins.connection_test import ConnectionTestMiddleware

#: Where the API server mounts the app; the page is ``{URL_PREFIX}/``.
URL_PREFIX = "/agentchat"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class LazyASGIApp:
    """An ASGI app that builds the real FastAPI app on its first request.

    Why: plugin classes are imported by every Airflow component, while only the API server ever serves the
    page; building FastAPI routes, pydantic models and the hook at import would tax all the others.
    """

    def __init__(self, factory: str) -> None:
        self._factory = factory
        self._app: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None

    @property
    def app(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        if self._app is None:
            from importlib import import_module

            module, _, name = self._factory.partition(":")
            self._app = getattr(import_module(module), name)()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return f"LazyASGIApp({self._factory!r})"


def _base_path() -> str:
    """Path part of ``[api] base_url`` (``""`` at the root), so the nav link works behind a path prefix."""
    try:
        from airflow.configuration import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    except Exception:
        return ""
    return urlsplit(base_url).path.rstrip("/")


def _icon(stroke: str, fill: str) -> str:
    """A chat-bubble icon as a data URL: no route to serve, nothing to authenticate.

    Drawn like Airflow's own nav icons (a 24-unit outline across the whole box, stroke width 2, their colour),
    so it is as large and as dark as its neighbours. An <img> cannot follow the nav's text colour, so the bubble
    is filled: it stays visible on the dark highlight of the active item too.
    """
    svg = (
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='{fill}' stroke='{stroke}' "
        "stroke-width='2' stroke-linecap='round' stroke-linejoin='round'>"
        "<path d='M7.9 20A9 9 0 1 0 4 16.1L2 22Z'/><path fill='none' d='M8 12h.01M12 12h.01M16 12h.01'/></svg>"
    )
    return "data:image/svg+xml," + quote(svg, safe="/:=' ")


class AgentChatPlugin(AirflowPlugin):
    """Agent Chat page: try a request against an agent through an ``agentchat`` connection."""

    name = "agentchat"
    fastapi_apps = [
        {
            "name": "agentchat",
            "app": LazyASGIApp("airflow_agentchat.plugins.app:create_app"),
            "url_prefix": URL_PREFIX,
        }
    ]
    fastapi_root_middlewares = [
        {"name": "agentchat-connection-test", "middleware": ConnectionTestMiddleware, "args": [], "kwargs": {}}
    ]
    external_views = [
        {
            "name": "Agent Chat",
            "href": f"{_base_path()}{URL_PREFIX}/",
            "url_route": "agent-chat",
            "destination": "nav",
            "icon": _icon("#3e5873", "#ffffff"),  # Airflow 3's nav icon colour, oklch(0.45 0.055 251)
            "icon_dark_mode": _icon("#abc0d7", "#1a202c"),
        }
    ]
