"""The rules of the operators' arguments, each written once and called both when a DAG is parsed and in ``execute``.

Two moments check arguments: the constructor (a bad literal fails the DAG import, the earliest and clearest
place) and ``execute`` (templated values are only known after rendering). When each rule lived in both places
the copies drifted, so each is one function here returning the problem (``None`` when the value is fine):
:func:`at_parse` turns it into the ``ValueError`` of a DAG import, the operators and ``structured_output`` into
an ``InvalidRequestError`` naming the field.

Imported while DAG files are parsed: nothing heavy (no pydantic, no httpx), nothing from the package.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

OUTPUTS = ("text", "message", "response")
OUTPUT_STRATEGIES = ("auto", "tool", "json")
TOOL_ERRORS = ("return", "raise")
APPROVAL_DEFAULTS = ("approve", "reject")
CACHE_TTLS = ("5m", "1h")
#: The function names the reference allows; a Python tool is its function's ``__name__``.
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def at_parse(field: str, problem: str | None) -> None:
    """Fail the DAG import with the field and the rule (nothing to do when ``problem`` is None)."""
    if problem is not None:
        raise ValueError(f"{field} {problem}")


def refuse(problems: Sequence[tuple[str, str]]) -> None:
    """:func:`at_parse` for the first of several ``(field, problem)``."""
    for field, problem in problems[:1]:
        at_parse(field, problem)


def one_of(value: Any, choices: Sequence[Any]) -> str | None:
    return None if value in choices else f"must be one of {', '.join(map(str, choices))}, got {value!r}"


def whole_number(value: Any, minimum: int) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    return None if ok else f"must be a whole number >= {minimum}, got {value!r}"


def output_strategy(value: Any) -> str | None:
    return one_of(value, OUTPUT_STRATEGIES)


def output_retries(value: Any) -> str | None:
    return whole_number(value, 0)


def cache_prompt(value: Any) -> str | None:
    """``cache_prompt``: None (no caching), ``"5m"`` or ``"1h"``; at parse time a template passes."""
    ok = value is None or value in CACHE_TTLS or (isinstance(value, str) and "{{" in value)
    return None if ok else f"must be '5m', '1h' or None (the cache lifetime), got {value!r}"


def flag(value: Any) -> bool | None:
    """A yes/no argument after rendering: a bool, or the texts a template gives (``"True"``, ``"false"``);
    None for anything else (at parse time: a template not rendered yet)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def approval_default(value: Any) -> str | None:
    ok = value is None or value in APPROVAL_DEFAULTS
    return None if ok else f"must be 'approve', 'reject' or None, got {value!r}"


def reviewed_output(output: str) -> str | None:
    """``require_approval`` reviews the answer text."""
    return None if output == "text" else "reviews the answer: leave output at 'text'"


def single_answer(n: Any, why: str) -> str | None:
    """``n`` with a feature that takes one answer (``why``: ``"output_schema (one answer is validated)"``)."""
    if isinstance(n, str) and n.strip().isdigit():  # a rendered template
        n = int(n)
    return None if not isinstance(n, int) or isinstance(n, bool) or n == 1 else f"must be 1 with {why}"


def review_problems(output: str, n: Any) -> list[tuple[str, str]]:
    """What ``require_approval`` needs of the other arguments: text output and one answer (``(field, problem)``)."""
    problems = [
        ("require_approval", reviewed_output(output)),
        ("n", single_answer(n, "require_approval (one answer is reviewed)")),
    ]
    return [(field, problem) for field, problem in problems if problem is not None]


def approval_timeout(value: Any) -> timedelta | None:
    """``approval_timeout`` as a ``timedelta`` (a number is seconds); ``ValueError`` naming the field otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return timedelta(seconds=value)
    if value is None or (isinstance(value, timedelta) and value.total_seconds() > 0):
        return value
    raise ValueError(f"approval_timeout must be a timedelta or seconds > 0, got {value!r}")


def tool_name(func: Callable[..., Any]) -> str:
    """The name the agent sees for a Python tool (its ``__name__``); ``ValueError`` unless the reference allows it."""
    name = getattr(func, "__name__", None)
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise ValueError(
            "a Python tool needs a name of 1-64 letters (a-z, A-Z), digits, '_' or '-' (a def, not a lambda or "
            f"partial): {func!r} has {name!r}"
        )
    return name


def rate_limit(name: str, value: Any) -> float | None:
    """A rate limit after templating: a positive number, or ``None`` (also for an empty rendered text)."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number


def breaker_failures(value: Any) -> str | None:
    """``breaker_failures``: failures in a row of one connection that open its breaker (a batch with fallbacks)."""
    return whole_number(value, 1)


def breaker_cooldown(value: Any) -> float:
    """``breaker_cooldown`` in seconds (a number or a ``timedelta``); ``ValueError`` naming the field otherwise."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < float("inf"):
        return float(value)
    raise ValueError(f"breaker_cooldown must be seconds >= 0 (a number or a timedelta), got {value!r}")
