"""Token counts as a value: the zero usage and the sum of usages are written in one place.

Answers, repaired answers, tool rounds and batch items all report the same three counts; summing them or
writing "nothing used" by hand in each place let the shapes drift apart. Import-light (no pydantic).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Prompt, completion and total tokens of one answer, or of several added together (``+``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, usage: Mapping[str, Any] | None) -> TokenUsage:
        """The counts in a usage mapping (a response's, a result line's, a saved one); a missing or
        non-integer count is 0, detail objects are left out."""
        if not usage:
            return ZERO
        return cls(*(_count(usage.get(key)) for key in _KEYS))

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        """The JSON form written to XCom, result lines and summaries."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


class UsageTally:
    """A running sum of usage mappings: what reading thousands of result lines adds up, without building a
    :class:`TokenUsage` per line (which costs more than parsing the line)."""

    __slots__ = ("completion_tokens", "prompt_tokens", "total_tokens")

    def __init__(self) -> None:
        self.prompt_tokens = self.completion_tokens = self.total_tokens = 0

    def add(self, usage: Mapping[str, Any] | None) -> None:
        if usage:
            prompt, completion, total = (_count(usage.get(key)) for key in _KEYS)
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            self.total_tokens += total

    def total(self) -> TokenUsage:
        return TokenUsage(self.prompt_tokens, self.completion_tokens, self.total_tokens)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


ZERO = TokenUsage()
