"""Images for a prompt: https URLs sent as they are, files read into base64 ``data:`` URLs.

The agent fetches an ``https://`` URL itself, but it cannot read the worker's disk or a bucket, so a local path
or an object-storage URI (``s3://``, ``gs://``, ``file://``...) is read here and sent inline. The type comes from
the file's first bytes (PNG, JPEG, GIF, WEBP), not its name: a file that is not one of those is refused, so a
path that names something else (a key file, ``/proc/self/environ``) never leaves the worker. Reading stops at
``max_bytes``: a huge file costs that much memory at most, and fails naming the image and the cap.

Imported at execute time only; ``ObjectStoragePath`` (``airflow.sdk``) is imported when a URI is read.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_agentchat.exceptions import InvalidRequestError

#: The default ``max_image_bytes``: what the file may weigh before it is base64-encoded (a third more on the wire).
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_KNOWN = "PNG, JPEG, GIF or WEBP"
_CHUNK = 1 << 20


def image_type(head: bytes) -> str | None:
    """The MIME type of an image from its first bytes, or None for anything but PNG, JPEG, GIF and WEBP."""
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_parts(
    images: Any,
    *,
    field: str = "images",
    conn_id: str | None = None,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    local: bool = True,
) -> list[dict[str, Any]]:
    """``image_url`` parts for a list of image references (a single string is one image).

    ``local=False`` refuses local paths and ``file://`` (batch rows are data: they do not pick files off the
    worker's disk). Errors are ``InvalidRequestError`` naming ``field[i]`` and the rule, raised before sending.
    """
    if images is None:
        return []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, Sequence):
        raise InvalidRequestError([(field, f"must be a list of image URLs or paths, not {type(images).__name__}")])
    return [
        image_part(ref, field=f"{field}[{i}]", conn_id=conn_id, max_bytes=max_bytes, local=local)
        for i, ref in enumerate(images)
    ]


def image_part(ref: Any, *, field: str, conn_id: str | None, max_bytes: int, local: bool = True) -> dict[str, Any]:
    """One ``image_url`` part: an https or ``data:image/`` URL as is, anything else read into a data URL."""
    if isinstance(ref, Mapping):  # already a part's image_url object ({"url", "detail"})
        return {"type": "image_url", "image_url": dict(ref)}
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidRequestError([(field, "must be an https URL, a local path or an object-storage URI")])
    if ref.startswith(("https://", "data:")):
        return {"type": "image_url", "image_url": {"url": ref}}
    if ref.startswith("http://"):
        raise InvalidRequestError([(field, f"{ref!r}: http:// is sent in clear and refused; use https://")])
    is_uri = "://" in ref
    if not local and (not is_uri or ref.startswith("file://")):
        raise InvalidRequestError([(field, f"{ref!r}: a batch item's image must be an https URL or a storage URI")])
    data = _read(ref, field=field, conn_id=conn_id, max_bytes=max_bytes, uri=is_uri)
    mime = image_type(data[:16])
    if mime is None:
        raise InvalidRequestError([(field, f"{ref!r} is not a {_KNOWN} image (judged by its first bytes)")])
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url}}


def _read(ref: str, *, field: str, conn_id: str | None, max_bytes: int, uri: bool) -> bytes:
    """The file's bytes, read in chunks and refused as soon as they pass ``max_bytes``.

    A batch prepares its items inside its event loop. An object store's file system (s3fs, gcsfs) created in a
    thread with a running loop takes that loop for its own and hands out coroutines nobody awaits, so a URI is
    then read from a thread of its own (the loop waits for it, as it waits for any synchronous read).
    """
    if uri and _in_event_loop():
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="agentchat-image") as pool:
            return pool.submit(_read, ref, field=field, conn_id=conn_id, max_bytes=max_bytes, uri=uri).result()
    try:
        if uri:
            from airflow.sdk import ObjectStoragePath

            handle = ObjectStoragePath(ref, conn_id=conn_id or None).open("rb")
        else:
            handle = open(ref, "rb")  # closed by the with-block below, as the URI's is
        chunks: list[bytes] = []
        size = 0
        with handle:
            while chunk := handle.read(min(_CHUNK, max_bytes + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    break
    except Exception as exc:  # a missing file, a denied bucket: the same on every try
        raise InvalidRequestError([(field, f"{ref!r} cannot be read: {type(exc).__name__}: {exc}")]) from None
    if size > max_bytes:
        raise InvalidRequestError([(field, f"{ref!r} is larger than max_image_bytes={max_bytes}")])
    return b"".join(chunks)


def _in_event_loop() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def attach_images(messages: list[dict[str, Any]], parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with ``parts`` added to the last user message (its string content becomes a text part)."""
    if not parts:
        return messages
    for at in range(len(messages) - 1, -1, -1):
        message = messages[at]
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                content = [{"type": "text", "text": content}] if content else []
            elif isinstance(content, Mapping):
                content = [content]
            content = [*(content or []), *parts]
            return [*messages[:at], {**message, "content": content}, *messages[at + 1 :]]
    raise InvalidRequestError([("images", "need a user message to attach to: give a prompt or user messages")])


def with_images(prompt: str | None, messages: list[Any] | None, images: Any) -> tuple[None, list[Any]]:
    """A batch item's ``images`` added to its prompt (or its last user message): the item as messages.

    Item images are https URLs, ``data:`` URLs or object-storage URIs (read with the connection named in the
    URI, ``s3://conn_id@bucket/key``, or the worker's ambient credentials); never local paths.
    """
    built = list(messages or [])
    if prompt is not None:
        built.append({"role": "user", "content": prompt})
    return None, attach_images(built, image_parts(images, local=False))
