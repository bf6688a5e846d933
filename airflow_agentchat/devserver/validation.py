"""Request validation for the dev server, through the provider's own request model.

The dev server should reject what a real agent endpoint rejects, so clients meet their 400s offline; the rules
are those of :class:`airflow_agentchat.models.ChatCompletionRequest` (one place, not a second copy here). The
result is ``None`` (valid) or ``(message, param)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Problem = tuple[str, str | None]


def make_validator() -> Callable[[Any], Problem | None]:
    """A validator built on ``ChatCompletionRequest``.

    The model is the client's strict view (it forbids unknown keys); a server has to accept extra top-level
    keys that clients pass through ``extra_body``, so only the fields the model names are validated.
    """
    from pydantic import ValidationError

    from airflow_agentchat.models import ChatCompletionRequest, field_errors

    known = set(ChatCompletionRequest.model_fields) - {"extra_body"}

    def validate(body: Any) -> Problem | None:
        if not isinstance(body, dict):
            return "the request body must be a JSON object", None
        try:
            ChatCompletionRequest.model_validate({k: v for k, v in body.items() if k in known})
        except ValidationError as exc:
            errors = field_errors(exc)
            message = "; ".join(f"{field}: {rule}" for field, rule in errors)
            param = errors[0][0] if errors and errors[0][0] != "request" else None
            return f"Invalid chat completion request: {message}", param
        return None

    return validate
