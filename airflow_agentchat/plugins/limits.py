"""How much of the API server the Agent Chat page may hold: chats in flight per user, and time per chat.

The page's chats run on the API server's event loop (async I/O, no thread held), but each one still holds a
connection to the agent and some memory for as long as the agent takes. A slow or stuck agent must not let one
user pile up chats without end, and no chat may last forever. Both limits are Airflow settings of the API
server, read when the page's app is built:

``[agentchat] page_chats_per_user`` (default 4)
    chats one user may have in flight at once on one API server process; one more is answered 429.
``[agentchat] page_chat_timeout`` (default 300 seconds)
    the longest a chat may take from the first attempt to the last chunk, retries included; the page then
    gets a ``deadline_exceeded`` error (504, or an ``error`` event on a stream).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

DEFAULT_CHATS_PER_USER = 4
DEFAULT_CHAT_TIMEOUT = 300.0
SECTION = "agentchat"


@dataclass(frozen=True)
class PageLimits:
    chats_per_user: int = DEFAULT_CHATS_PER_USER
    chat_timeout: float = DEFAULT_CHAT_TIMEOUT

    @classmethod
    def from_config(cls) -> PageLimits:
        """Read the API server's settings; a value that is not a positive number names the setting and the rule."""
        from airflow.configuration import conf

        per_user = conf.get(SECTION, "page_chats_per_user", fallback=None)
        timeout = conf.get(SECTION, "page_chat_timeout", fallback=None)
        try:
            limits = cls(
                chats_per_user=int(per_user) if per_user not in (None, "") else DEFAULT_CHATS_PER_USER,
                chat_timeout=float(timeout) if timeout not in (None, "") else DEFAULT_CHAT_TIMEOUT,
            )
        except ValueError:
            limits = cls(0, 0)
        if limits.chats_per_user < 1 or not limits.chat_timeout > 0:
            raise ValueError(
                f"[{SECTION}] page_chats_per_user must be a whole number >= 1 and page_chat_timeout a number of "
                f"seconds > 0; got {per_user!r} and {timeout!r}"
            )
        return limits


@dataclass
class ChatSlots:
    """Chats in flight per user. Used from the event loop only, so a plain counter needs no lock."""

    limit: int
    _taken: Counter[str] = field(default_factory=Counter)

    def take(self, user: str) -> bool:
        if self._taken[user] >= self.limit:
            return False
        self._taken[user] += 1
        return True

    def give_back(self, user: str) -> None:
        self._taken[user] -= 1
        if self._taken[user] <= 0:
            del self._taken[user]

    def in_flight(self, user: str) -> int:
        return self._taken[user]
