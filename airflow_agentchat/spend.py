"""What a task may spend and what it spent: token budgets and cost, with no I/O.

Both operators and the batch forecast use the same pieces: :func:`estimate` (a request's prompt tokens before
it is sent), :func:`completion_cap` (the most completion tokens it can be billed for), :class:`Prices` turns
token usage into money (from the connection's
``prompt_token_price`` / ``completion_token_price`` extras, currency units per million tokens, and
``cached_prompt_token_price`` / ``cache_write_token_price`` for prompt tokens read from / written to the prompt
cache, each the prompt price when unset), and
:class:`Budget` decides whether one more request may be sent. A budget *reserves* a request's estimate before
it is sent and settles it against the real usage when the answer arrives, so requests in flight at the same
time cannot overshoot it together; it never stops a request that was already sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_agentchat.exceptions import AgentChatError
from airflow_agentchat.usage import ZERO, TokenUsage

BUDGET_ACTIONS = ("fail", "succeed")
FORECAST_MODES = ("log", "check", "only")  # see batch/forecast.py


class BudgetExhaustedError(AgentChatError, kind="budget_exhausted"):
    """The task's token or cost budget does not allow another request."""


def _price(extra: Mapping[str, Any], key: str) -> float | None:
    value = extra.get(key)
    if value is None or value == "":
        return None
    try:
        price = float(value)
    except (TypeError, ValueError):
        raise AgentChatError(f"Connection extra {key!r} must be a number (per million tokens), got {value!r}") from None
    if not price >= 0 or price == float("inf"):
        raise AgentChatError(f"Connection extra {key!r} must be a finite number >= 0, got {value!r}")
    return price


@dataclass(frozen=True)
class Prices:
    """Currency units per million prompt / completion tokens; ``known`` only when at least one is set.

    ``cached_prompt`` prices the prompt tokens read from the prompt cache, ``cache_write`` those written to it;
    each is ``None`` when its extra is unset, and then those tokens cost the prompt price.
    """

    prompt: float = 0.0
    completion: float = 0.0
    known: bool = False
    cached_prompt: float | None = None
    cache_write: float | None = None

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any] | None) -> Prices:
        extra = extra or {}
        prompt = _price(extra, "prompt_token_price")
        completion = _price(extra, "completion_token_price")
        cached = _price(extra, "cached_prompt_token_price")
        write = _price(extra, "cache_write_token_price")
        if prompt is None and completion is None and cached is None and write is None:
            return cls()
        return cls(prompt or 0.0, completion or 0.0, True, cached, write)

    def cost(self, usage: TokenUsage | Mapping[str, Any] | None) -> float | None:
        """The cost of ``usage`` (None without prices), rounded to a millionth of a unit.

        Cache reads and writes are counted inside ``prompt_tokens`` (as the endpoint reports them): they are
        priced at their own rates and the rest of the prompt at the prompt price.
        """
        if not self.known:
            return None
        tokens = usage if isinstance(usage, TokenUsage) else TokenUsage.of(usage)
        prompt = tokens.prompt_tokens * self.prompt
        if tokens.cache_read_input_tokens or tokens.cache_created_input_tokens:
            read, written = tokens.cache_read_input_tokens, tokens.cache_created_input_tokens
            plain = max(0, tokens.prompt_tokens - read - written)
            cached = self.prompt if self.cached_prompt is None else self.cached_prompt
            write = self.prompt if self.cache_write is None else self.cache_write
            prompt = plain * self.prompt + read * cached + written * write
        return round((prompt + tokens.completion_tokens * self.completion) / 1_000_000, 6)


def check_limits(max_total_tokens: Any, max_cost: Any, on_budget_exhausted: Any = "fail") -> None:
    """Refuse bad budget arguments when the DAG is parsed, naming the field and the rule."""
    if max_total_tokens is not None and (
        not isinstance(max_total_tokens, int) or isinstance(max_total_tokens, bool) or max_total_tokens < 1
    ):
        raise ValueError(f"max_total_tokens must be a whole number >= 1, got {max_total_tokens!r}")
    if max_cost is not None and (
        not isinstance(max_cost, (int, float)) or isinstance(max_cost, bool) or not max_cost > 0
    ):
        raise ValueError(f"max_cost must be a number > 0, got {max_cost!r}")
    if on_budget_exhausted not in BUDGET_ACTIONS:
        raise ValueError(f"on_budget_exhausted must be one of {', '.join(BUDGET_ACTIONS)}, got {on_budget_exhausted!r}")


def check_forecast(value: Any) -> None:
    """Refuse a bad ``forecast`` argument when the DAG is parsed."""
    if value is not None and value not in FORECAST_MODES:
        raise ValueError(f"forecast must be None or one of {', '.join(FORECAST_MODES)}, got {value!r}")


@dataclass
class Budget:
    """Tokens and cost already used, what is reserved for requests in flight, and the limits.

    ``used`` starts with what earlier runs or tries spent, so the limits hold across them.
    """

    max_total_tokens: int | None = None
    max_cost: float | None = None
    prices: Prices = field(default_factory=Prices)
    used: TokenUsage = ZERO
    reserved_tokens: int = 0
    reserved_cost: float = 0.0
    exhausted: bool = False

    def __post_init__(self) -> None:
        if self.max_cost is not None and not self.prices.known:
            raise AgentChatError(
                "max_cost needs prices: set the connection extras prompt_token_price and/or completion_token_price "
                "(currency units per million tokens)"
            )

    @property
    def active(self) -> bool:
        return self.max_total_tokens is not None or self.max_cost is not None

    @property
    def used_cost(self) -> float | None:
        return self.prices.cost(self.used)

    def _estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.prices.cost(TokenUsage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)) or 0.0

    def reserve(self, prompt_tokens: int, completion_tokens: int) -> bool:
        """Reserve a request's estimate; False (and ``exhausted``) when it would go over a limit."""
        if self.exhausted:
            return False
        tokens = prompt_tokens + completion_tokens
        if (
            self.max_total_tokens is not None
            and self.used.total_tokens + self.reserved_tokens + tokens > self.max_total_tokens
        ):
            self.exhausted = True
            return False
        cost = self._estimate_cost(prompt_tokens, completion_tokens) if self.max_cost is not None else 0.0
        if self.max_cost is not None and (self.used_cost or 0.0) + self.reserved_cost + cost > self.max_cost:
            self.exhausted = True
            return False
        self.reserved_tokens += tokens
        self.reserved_cost += cost
        return True

    def settle(self, prompt_tokens: int, completion_tokens: int, usage: Mapping[str, Any] | None) -> None:
        """Replace a reservation by what the request really used (an error answer may have used nothing)."""
        self.reserved_tokens = max(0, self.reserved_tokens - prompt_tokens - completion_tokens)
        if self.max_cost is not None:
            self.reserved_cost = max(0.0, self.reserved_cost - self._estimate_cost(prompt_tokens, completion_tokens))
        self.used += TokenUsage.of(usage)

    def describe(self) -> str:
        """Used against the limits, for log lines and error messages."""
        parts = []
        if self.max_total_tokens is not None:
            parts.append(f"{self.used.total_tokens} of max_total_tokens={self.max_total_tokens} tokens used")
        if self.max_cost is not None:
            parts.append(f"cost {self.used_cost:.6f} of max_cost={self.max_cost}")
        return ", ".join(parts) or f"{self.used.total_tokens} tokens used"


#: Tokens counted for one image or video part, whatever its size: the endpoint does not say how it counts media,
#: and the length of a ``data:`` URL says nothing about it (a 1 MB base64 image is not 250,000 tokens).
MEDIA_PART_TOKENS = 1000
#: Tokens a request is expected to add per message (role and separators).
MESSAGE_OVERHEAD_TOKENS = 4
_ABSENT = object()
#: The completion estimate when a request sets no cap and no earlier answer is known.
DEFAULT_COMPLETION_TOKENS = 64


def _field(value: Any, name: str) -> Any:
    """``value[name]`` of a mapping or ``value.name`` of a model; the cheap checks first (this runs per item)."""
    if type(value) is dict:
        return value.get(name)
    found = getattr(value, name, _ABSENT)
    if found is not _ABSENT:
        return found
    return value.get(name) if isinstance(value, Mapping) else None


def _content_chars(content: Any) -> tuple[int, int]:
    """(characters of text, number of media parts) in one message's content (a string, a part or a list)."""
    if content is None:
        return 0, 0
    if isinstance(content, str):
        return len(content), 0
    if isinstance(content, (list, tuple)):
        chars = media = 0
        for part in content:
            part_chars, part_media = _content_chars(part)
            chars += part_chars
            media += part_media
        return chars, media
    kind = _field(content, "type")
    if kind == "text":
        text = _field(content, "text")
        return (len(text) if isinstance(text, str) else 0), 0
    if kind in ("image_url", "video_url"):
        return 0, 1
    return len(str(content)), 0


def estimate(request: Any) -> int:
    """The prompt tokens of a request (or of a list of messages), before it is sent: the one estimate behind
    every budget reservation, every tokens-per-minute reservation and the batch forecast.

    About four characters of text a token, plus :data:`MESSAGE_OVERHEAD_TOKENS` per message and
    :data:`MEDIA_PART_TOKENS` per image or video part; tool calls count their arguments. Real usage corrects
    it once the answer arrives.
    """
    messages = request if isinstance(request, (list, tuple)) else _field(request, "messages")
    chars = media = 0
    for message in messages or ():
        part_chars, part_media = _content_chars(_field(message, "content"))
        chars += part_chars
        media += part_media
        for call in _field(message, "tool_calls") or ():
            arguments = _field(_field(call, "function"), "arguments")
            chars += len(arguments) if isinstance(arguments, str) else 0
    count = len(messages or ())
    return chars // 4 + MESSAGE_OVERHEAD_TOKENS * count + MEDIA_PART_TOKENS * media + 1


def completion_cap(request: Any) -> int | None:
    """The most completion tokens a request can be billed for: ``max_tokens`` or ``max_completion_tokens``,
    whichever is set (the smaller when both are), times ``n``; ``None`` when neither is set."""
    caps = [c for c in (_field(request, "max_tokens"), _field(request, "max_completion_tokens")) if isinstance(c, int)]
    if not caps:
        return None
    n = _field(request, "n")
    return min(caps) * (n if isinstance(n, int) and n > 0 else 1)
