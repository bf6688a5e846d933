"""Token counts as a value: the zero usage and the sum of usages are written in one place.

Answers, repaired answers, tool rounds and batch items all report the same counts; summing them or writing
"nothing used" by hand in each place let the shapes drift apart. Import-light (no pydantic).

Besides the three totals, an answer may say how many of its prompt tokens were written to the prompt cache
(``cache_created_input_tokens``, split by lifetime in ``cache_creation``) and read from it
(``cache_read_input_tokens``). They are part of ``prompt_tokens``, kept and summed like the totals, and written
out only when one of them is not zero, so a usage without caching keeps its three-count shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
CACHE_CREATED = "cache_created_input_tokens"
CACHE_READ = "cache_read_input_tokens"
CACHE_CREATION = "cache_creation"
CACHE_5M = "ephemeral_5m_input_tokens"
CACHE_1H = "ephemeral_1h_input_tokens"


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Prompt, completion and total tokens of one answer, or of several added together (``+``), with the
    prompt tokens written to (by lifetime) and read from the prompt cache."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cache_created_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0

    @classmethod
    def of(cls, usage: Mapping[str, Any] | None) -> TokenUsage:
        """The counts in a usage mapping (a response's, a result line's, a saved one); a missing or
        non-integer count is 0, other detail objects are left out."""
        if not usage:
            return ZERO
        prompt, completion, total = (_count(usage.get(key)) for key in _KEYS)
        if CACHE_CREATED not in usage and CACHE_READ not in usage and CACHE_CREATION not in usage:
            return cls(prompt, completion, total)
        creation = usage.get(CACHE_CREATION)
        creation = creation if isinstance(creation, Mapping) else {}
        return cls(
            prompt,
            completion,
            total,
            _count(usage.get(CACHE_CREATED)),
            _count(usage.get(CACHE_READ)),
            _count(creation.get(CACHE_5M)),
            _count(creation.get(CACHE_1H)),
        )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            self.cache_created_input_tokens + other.cache_created_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.ephemeral_5m_input_tokens + other.ephemeral_5m_input_tokens,
            self.ephemeral_1h_input_tokens + other.ephemeral_1h_input_tokens,
        )

    @property
    def cached(self) -> bool:
        """Whether any cache count is not zero."""
        return bool(
            self.cache_created_input_tokens
            or self.cache_read_input_tokens
            or self.ephemeral_5m_input_tokens
            or self.ephemeral_1h_input_tokens
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON form written to XCom, result lines and summaries (cache counts only when there are any)."""
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached:
            out[CACHE_CREATED] = self.cache_created_input_tokens
            out[CACHE_READ] = self.cache_read_input_tokens
            out[CACHE_CREATION] = {CACHE_5M: self.ephemeral_5m_input_tokens, CACHE_1H: self.ephemeral_1h_input_tokens}
        return out


class UsageTally:
    """A running sum of usage mappings: what reading thousands of result lines adds up, without building a
    :class:`TokenUsage` per line (which costs more than parsing the line)."""

    __slots__ = (
        "cache_1h",
        "cache_5m",
        "cache_created",
        "cache_read",
        "completion_tokens",
        "prompt_tokens",
        "total_tokens",
    )

    def __init__(self) -> None:
        self.prompt_tokens = self.completion_tokens = self.total_tokens = 0
        self.cache_created = self.cache_read = self.cache_5m = self.cache_1h = 0

    def add(self, usage: Mapping[str, Any] | None) -> None:
        if usage:
            get = usage.get  # spelled out, not a loop over _KEYS: this runs once or twice per batch item
            self.prompt_tokens += _count(get("prompt_tokens"))
            self.completion_tokens += _count(get("completion_tokens"))
            self.total_tokens += _count(get("total_tokens"))
            if CACHE_CREATED in usage or CACHE_READ in usage or CACHE_CREATION in usage:
                self.cache_created += _count(usage.get(CACHE_CREATED))
                self.cache_read += _count(usage.get(CACHE_READ))
                creation = usage.get(CACHE_CREATION)
                if isinstance(creation, Mapping):
                    self.cache_5m += _count(creation.get(CACHE_5M))
                    self.cache_1h += _count(creation.get(CACHE_1H))

    def total(self) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens,
            self.completion_tokens,
            self.total_tokens,
            self.cache_created,
            self.cache_read,
            self.cache_5m,
            self.cache_1h,
        )


def _count(value: Any) -> int:
    return value if type(value) is int else 0  # not bool; JSON gives plain ints


ZERO = TokenUsage()
