"""What the hook needs from an ``agentchat`` Airflow connection, read and checked once.

The host is normalised (scheme added, a pasted API path dropped), user info in it and clear-text http to a
remote host are refused, and every extra is checked, naming the extra and the rule, before anything is sent.
Token prices live here too, so a task reads the connection once for requests and cost alike.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_agentchat.exceptions import AgentChatError
from airflow_agentchat.hooks.limits import LimitSettings
from airflow_agentchat.spend import Prices

if TYPE_CHECKING:
    from airflow.sdk import Connection

COMPLETIONS_PATH = "/api/v1/chat/completions"
DEFAULT_MAX_RESPONSE_BYTES = 16 << 20
DEFAULT_MAX_EVENT_BYTES = 4 << 20
DEADLINE_FACTOR = 4
_PASTED_SUFFIXES = ("/api/v1/chat/completions", "/api/v1/chat", "/api/v1")


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
    prices: Prices = field(default_factory=Prices)
    limits: LimitSettings = field(default_factory=LimitSettings)

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
            prices=Prices.from_extra(extra),
            limits=LimitSettings.from_extra(extra, lambda extra, key: _positive(extra, key, None)),
        )

    def overridden(self, *, timeout: float | None = None, max_retries: int | None = None) -> ConnectionSettings:
        """These settings with a task's own ``timeout`` / ``max_retries`` (``None`` keeps the connection's)."""
        settings = self
        if timeout is not None:
            settings = replace(settings, timeout=float(timeout))
        if max_retries is not None:
            settings = replace(settings, max_retries=int(max_retries))
        return settings


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
