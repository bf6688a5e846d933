"""From input to a validated request, or to an error that names each field and its rule (never its value)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from airflow_agentchat.models._common import DEFAULT_MODEL
from airflow_agentchat.models.request import ChatCompletionRequest, ChatMessage, RequestFields, _Request

if TYPE_CHECKING:
    from airflow_agentchat.exceptions import InvalidRequestError


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after[", "function-before[", "function-wrap[")) or part in (
            "str",
            "list[str]",
            "NamedToolChoice",
            "literal['none','auto','required']",
        ):
            continue
        else:
            out += f".{part}" if out else part
    return out or "request"


def field_errors(error: ValidationError) -> list[tuple[str, str]]:
    """Pydantic's error list as one ``(field, rule)`` pair per field, without input values.

    Input values are left out on purpose: they may hold prompt text users consider private.
    """
    seen: dict[str, list[str]] = {}
    for item in error.errors(include_url=False, include_input=False):
        field = _loc(item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if msg not in seen.setdefault(field, []):
            seen[field].append(msg)
    return [(field, " or ".join(msgs)) for field, msgs in seen.items()]


def invalid_request_from(error: ValidationError) -> InvalidRequestError:
    """The provider's error for a request that broke a rule (see :func:`field_errors`)."""
    # Imported here so the dev server can validate with these models without importing Airflow.
    from airflow_agentchat.exceptions import InvalidRequestError

    return InvalidRequestError(field_errors(error))


def _validated(model: type[_Request], data: dict[str, Any]) -> _Request:
    try:
        request = model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request_from(exc) from None
    unencodable = _unencodable_text(data)
    if unencodable is not None:
        from airflow_agentchat.exceptions import InvalidRequestError

        raise InvalidRequestError(
            [(unencodable or "request", "holds a lone surrogate (e.g. \\ud800): not valid Unicode, cannot be sent")]
        )
    return request


def build_request(messages: Sequence[ChatMessage | Mapping[str, Any]] | None, **params: Any) -> ChatCompletionRequest:
    """Validate ``messages`` and body ``params`` into a request, or raise :class:`InvalidRequestError`."""
    data = {key: value for key, value in params.items() if value is not None}
    data.setdefault("model", DEFAULT_MODEL)  # always sent; set, so the body is written in one step
    data["messages"] = [m.model_dump(exclude_none=True) if isinstance(m, BaseModel) else m for m in (messages or [])]
    return _validated(ChatCompletionRequest, data)


def build_fields(**params: Any) -> RequestFields:
    """Validate body ``params`` alone, no messages (a batch's shared fields), or raise :class:`InvalidRequestError`."""
    return _validated(RequestFields, {key: value for key, value in params.items() if value is not None})


def _unencodable_text(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string that cannot be encoded as UTF-8 (a lone surrogate), or ``None``.

    Pydantic accepts such strings, and the JSON encoder only fails when the body is encoded, with a
    ``UnicodeEncodeError`` that names no field. ASCII text, by far the most common, is checked in C.
    """
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _unencodable_text(key, path) if isinstance(key, str) else None
            found = found if found is not None else _unencodable_text(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _unencodable_text(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
