"""The hook's connections: TLS, proxy, one pooled keep-alive transport per path, and how to cut them.

Sync requests use httpx's own transport; async requests use the ``httpx-aiohttp`` transport, which keeps
every httpx type but drives hundreds of requests in flight at the latency bound (see benchmarks/RESULTS.md).
Requests go straight to the transport: ``Client.send`` adds cookie, auth and redirect handling per request
that this API never uses, and that cost is what limits a batch at low latency.

A caller may pass its own transport (``AgentChatHook(transport=...)``): any ``httpx.BaseTransport`` and/or
``httpx.AsyncBaseTransport`` (``httpx.MockTransport`` is both) then serves the paths it supports. The hook
does not close a transport it was given.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from functools import cached_property, lru_cache
from typing import Any
from urllib.parse import urlsplit

import httpx

from airflow_agentchat.hooks.deadline import Sockets
from airflow_agentchat.hooks.settings import ConnectionSettings

USER_AGENT = "airflow-agentchat/0.1"
AnyTransport = httpx.BaseTransport | httpx.AsyncBaseTransport


class Transport:
    """Builds, holds and closes the transports of one hook, for the settings it was made with."""

    def __init__(self, settings: ConnectionSettings, max_connections: int, given: AnyTransport | None) -> None:
        self.settings = settings
        self.max_connections = max_connections
        self.given = given
        self.sockets = Sockets()
        self._async: httpx.AsyncBaseTransport | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None

    def options(self) -> dict[str, Any]:
        s = self.settings
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        return {
            "headers": headers,
            "timeout": httpx.Timeout(s.timeout, connect=min(10.0, s.timeout)),
            "follow_redirects": False,
        }

    @cached_property
    def wire(self) -> tuple[httpx.URL, httpx.Headers, dict[str, Any]]:
        """URL, headers and extensions of every request, built once (they are the same for each request).

        The ``trace`` extension is how the sync path learns its sockets (see :mod:`.deadline`).
        """
        options = self.options()
        url = httpx.URL(self.settings.completions_url, params={"agent": "true"})
        extensions = {"timeout": options["timeout"].as_dict(), "trace": self.sockets.trace}
        headers = httpx.Headers({**options["headers"], "Content-Type": "application/json"})
        return url, headers, extensions

    @cached_property
    def proxy(self) -> str | None:
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
    def sync(self) -> httpx.BaseTransport:
        """The sync transport, created on first use; sync requests are sent straight to it."""
        if isinstance(self.given, httpx.BaseTransport):
            return self.given
        return httpx.HTTPTransport(verify=ssl_context(self.settings.verify), proxy=self.proxy)

    @cached_property
    def client(self) -> httpx.Client:
        """An ``httpx.Client`` on the sync transport and the hook's headers, for callers who want one."""
        return httpx.Client(transport=self.sync, **self.options())

    def current_async(self) -> httpx.AsyncBaseTransport:
        """The async transport of the running event loop (an aiohttp session cannot cross loops)."""
        if isinstance(self.given, httpx.AsyncBaseTransport):
            return self.given
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            from httpx_aiohttp import AiohttpTransport

            limits = httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)
            proxy = httpx.Proxy(self.proxy) if self.proxy else None
            self._async = AiohttpTransport(verify=ssl_context(self.settings.verify), limits=limits, proxy=proxy)
            self._async_loop = loop
        return self._async

    def close(self) -> None:
        """Close the sync connections; the next sync request opens new ones."""
        self.__dict__.pop("client", None)
        transport = self.__dict__.pop("sync", None)
        if transport is not None and transport is not self.given:
            transport.close()

    def cut(self) -> None:
        """Shut every sync socket down, waking a thread blocked reading one (``cancel``)."""
        self.sockets.shut_all()

    async def aclose(self) -> None:
        if self._async is not None:
            transport, self._async = self._async, None
            await transport.aclose()


def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context for ``verify``, built once per process for each setting and trust-store environment.

    Loading the system CA bundle is paid by every hook (each batch, each trigger) before its first request;
    a context is safe to share between transports and threads once built.
    """
    return _cached_ssl_context(verify, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@lru_cache(maxsize=8)
def _cached_ssl_context(verify: bool | str, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    if isinstance(verify, str):  # a CA bundle file or directory (httpx deprecates passing the path itself)
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context(verify=verify)
