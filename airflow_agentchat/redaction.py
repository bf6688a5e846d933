"""Keep the access key out of text: every string that may hold it passes :func:`redact` before it is shown.

A module of its own, importing nothing, so pure modules (structured output, the batch's result lines) can use
it without loading the wire layer.
"""

from __future__ import annotations


def redact(text: str, secret: str | None) -> str:
    """Remove ``secret`` from ``text`` (a server may echo the key back in an error message).

    Secrets shorter than four characters are left alone, like Airflow's own masker does: replacing every "a"
    would garble messages without protecting anything.
    """
    if secret and len(secret) >= 4 and secret in text:
        text = text.replace(secret, "***")
    return text


def redact_optional(text: str | None, secret: str | None) -> str | None:
    """:func:`redact` for a field that may be absent."""
    return None if text is None else redact(text, secret)
