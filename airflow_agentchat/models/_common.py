"""What every wire model shares: the strict and lenient configurations, the roles, and the template-proof boolean."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, StringConstraints

#: reference requires it; their own examples send a placeholder like this.
DEFAULT_MODEL = "agent"

Role = Literal["developer", "system", "user", "assistant", "tool"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
FunctionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _text_bool(value: Any) -> Any:
    """A real boolean, or the exact texts ``"true"`` / ``"false"`` that a rendered template produces.

    Pydantic's lax mode would also take ``"yes"``, ``"on"``, ``1`` or ``"t"``: a value like ``logprobs: "yes"``
    is more likely a mistake than a wish, so it is refused.
    """
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError('must be true or false (a boolean, or the text "true" / "false")')


#: The booleans of the request: strict, except for the two texts templating gives.
TextBool = Annotated[bool, BeforeValidator(_text_bool)]

_STRICT = ConfigDict(extra="forbid", populate_by_name=True)
_LENIENT = ConfigDict(extra="allow", populate_by_name=True)
