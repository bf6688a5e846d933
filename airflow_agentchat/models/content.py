"""Message content: a string, or content parts (text with optional ``cache_control``, images, videos).

The shapes are those DigitalOcean's own SDK accepts for the agent endpoint (``gradient`` 3.12,
``types/agents/chat/completion_create_params.py``): a message's ``content`` is a string, one part object, or
a list whose items are strings or part objects. Text parts are allowed on every role; ``image_url`` and
``video_url`` parts on user messages only. Required and optional keys are the SDK's, and a part carries no
other key.

Validation dispatches on the role and on each part's ``type`` instead of letting pydantic try every branch of
a union, so an error names the one part that is wrong (``messages[1].content[2].image_url.url``), not every
shape it might have been. Parts are kept as given and sent unchanged.

Media URLs must be ``https://`` or a base64 ``data:`` URL of the part's media type. Anything else is refused
before sending: ``http://`` travels in clear and is refused by the agent platform; ``file://``, ``s3://`` and
local paths name files the agent cannot read (read them into a ``data:`` URL first); a ``data:`` URL of another
media type (``text/plain`` in an image part) is a mistake the model would only answer with nonsense.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from airflow_agentchat.models._common import _STRICT

CacheTTL = Literal["5m", "1h"]


def _not_null(value: Any) -> Any:
    """Optional keys of a part may be left out, but not sent as null (the SDK's types do not allow it)."""
    if value is None:
        raise ValueError("may be left out, but not null")
    return value


#: Marks an optional key that may be left out but not sent as null.
_NOT_NULL = BeforeValidator(_not_null)


class CacheControl(BaseModel):
    """Marks the prompt up to and including this part as a prefix the agent may cache."""

    model_config = _STRICT
    type: Literal["ephemeral"] = Field(description="The cache control type. Only `ephemeral`.")
    ttl: Annotated[CacheTTL | None, _NOT_NULL] = Field(
        None, description="How long the cached prefix lives: `5m` (the default) or `1h`."
    )


class TextPart(BaseModel):
    """A text part; allowed on every role."""

    model_config = _STRICT
    type: Literal["text"]
    text: str = Field(description="The text content.")
    cache_control: Annotated[CacheControl | None, _NOT_NULL] = Field(
        None, description="Cache control settings for the content part."
    )


def _media_url(url: str, media: str) -> str:
    if url[:5].lower() == "data:":
        header, comma, payload = url[5:].partition(",")
        mime, *params = header.split(";")
        if not comma or not payload:
            raise ValueError("a data: URL needs its payload after a comma (data:<type>;base64,<data>)")
        if "base64" not in params:
            raise ValueError("a data: URL must be base64-encoded (data:<type>;base64,<data>)")
        if not re.fullmatch(rf"{media}/[A-Za-z0-9.+-]+", mime):
            article = "an" if media == "image" else "a"
            raise ValueError(f"a data: URL here must carry {article} {media}/* media type, got {mime or 'none'!r}")
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme.lower() != "https" or not host:
        scheme = parts.scheme if parts is not None and parts.scheme else "no scheme"
        raise ValueError(
            f"must be an https:// URL or a base64 data: URL, got {scheme}: the agent fetches the {media} itself, "
            "so local paths, file://, s3:// and plain http:// cannot work (read the file into a data: URL)"
        )
    return url


class ImageURL(BaseModel):
    model_config = _STRICT
    url: str = Field(description="An https:// URL or a base64 data: URL of the image.")
    detail: Annotated[Literal["auto", "low", "high"] | None, _NOT_NULL] = Field(
        None, description="Detail level for image understanding."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _media_url(value, "image")


class ImagePart(BaseModel):
    """An image; user messages only."""

    model_config = _STRICT
    type: Literal["image_url"]
    image_url: ImageURL


class VideoURL(BaseModel):
    model_config = _STRICT
    url: str = Field(description="An https:// URL or a base64 data: URL of the video.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _media_url(value, "video")


class VideoPart(BaseModel):
    """A video; user messages only."""

    model_config = _STRICT
    type: Literal["video_url"]
    video_url: VideoURL


ContentPart = Annotated[TextPart | ImagePart | VideoPart, Field(discriminator="type")]
#: What ``messages[].content`` may hold (``None`` only where the message rules allow it).
Content = str | ContentPart | list[str | ContentPart]

_PART_MODELS: dict[str, type[BaseModel]] = {"text": TextPart, "image_url": ImagePart, "video_url": VideoPart}
_USER_ONLY = frozenset({"image_url", "video_url"})


def _error(loc: tuple[int | str, ...], message: str, value: Any) -> dict[str, Any]:
    return {"type": PydanticCustomError("content_part", message), "loc": loc, "input": value}


def _part(value: Any, role: str | None, loc: tuple[int | str, ...], errors: list[dict[str, Any]]) -> Any:
    """One part validated for ``role`` (None: the role itself is invalid, so any part type passes)."""
    if not isinstance(value, Mapping):
        errors.append(_error(loc, "must be a string or a content part object", value))
        return value
    kind = value.get("type")
    model = _PART_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        allowed = "'text'" if role not in (None, "user") else "'text', 'image_url' or 'video_url'"
        errors.append(_error((*loc, "type"), f"must be {allowed}", kind))
        return value
    if kind in _USER_ONLY and role not in (None, "user"):
        errors.append(_error((*loc, "type"), f"{kind} parts are only allowed on user messages", kind))
        return value
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors.extend({**item, "loc": (*loc, *item["loc"])} for item in exc.errors(include_url=False))
        return value


def validate_content(value: Any, role: str | None) -> Any:
    """``value`` as content of a ``role`` message: a string, one part, or a list of strings and parts.

    Raises a :class:`ValidationError` whose locations point into the content (``2``, ``image_url``, ``url``),
    so pydantic reports them under the message (``messages[1].content[2].image_url.url``).
    """
    if value is None or isinstance(value, str):
        return value
    errors: list[dict[str, Any]] = []
    if isinstance(value, list):
        out: Any = [
            item if isinstance(item, str) else _part(item, role, (index,), errors) for index, item in enumerate(value)
        ]
    elif isinstance(value, Mapping):
        out = _part(value, role, (), errors)
    else:
        errors.append(_error((), "must be a string, a content part object or a list of them", value))
        out = value
    if errors:
        raise ValidationError.from_exception_data("content", errors)  # type: ignore[arg-type]
    return out


def content_text(content: Any) -> str | None:
    """The text of ``content``: a string as it is, the text parts of a part list joined (None for None)."""
    if content is None or isinstance(content, str):
        return content
    items = content if isinstance(content, list) else [content]
    texts = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, Mapping) and item.get("type") == "text" and isinstance(item.get("text"), str):
            texts.append(item["text"])
        elif isinstance(item, TextPart):
            texts.append(item.text)
    return "".join(texts)
