"""Batch input: the forms an item may take, stable ids, and turning items into validated requests.

An item is one of

* a string: the user prompt;
* a list of message objects: the conversation;
* an object ``{"id"?, "prompt"?, "messages"?, "system_prompt"?, "context"?, "params"?, <body field>...}``:
  ``prompt`` is appended to ``messages`` as the last user message; any body field of the reference
  (``temperature``, ``max_tokens``, ``tools``, ``extra_body``, ...) at the top level or inside ``params``
  overrides the operator's value for this item; ``context`` is copied to the output line untouched (for
  joining results back to rows); any other key is an error, so a typo like ``temprature`` is caught.

Items without an ``id`` get one derived from their content (:func:`stable_id`), so the same input gives the
same ids on every run: that is what lets a retried task skip the items it already paid for. An id is one
answer: a second item with the same id and the same content is skipped and counted as a duplicate; one with
the same id but other content (``7`` and ``"7"`` included) becomes an ``invalid_item`` line of its own, under
``<id>#<content hash>``, so neither result overwrites the other.

Everything here runs once per item on the batch's hot path, so it avoids pydantic round trips: the only
validation is the hook's ``build_request`` (which raises before any network call).
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from airflow_agentchat.compat import file_lines
from airflow_agentchat.exceptions import AgentChatError, InvalidRequestError
from airflow_agentchat.images import with_images
from airflow_agentchat.request_body import BODY_FIELDS, compose_messages
from airflow_agentchat.spend import completion_cap, estimate

#: Keys an item object may carry besides the request body fields.
ITEM_KEYS = frozenset({"id", "prompt", "messages", "images", "system_prompt", "context", "params"})
_BODY = frozenset(BODY_FIELDS)


class InvalidItemError(InvalidRequestError, kind="invalid_item"):
    """An input item that cannot be read as one: a line that is not UTF-8 JSON, a value that is not an item's
    shape, or an id that an earlier item with other content already took. Like any invalid request, the same
    input fails the same way on every run, so it is never sent again."""

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        self.errors = list(errors or [])
        AgentChatError.__init__(self, message)  # the message is the item's own, not a list of field rules

    @classmethod
    def _rebuild(cls, data: dict[str, Any]) -> AgentChatError:
        return cls(str(data.get("message") or ""), [(str(f), str(r)) for f, r in data.get("errors") or []])


#: One encoder for every id: ``json.dumps`` with these options would build a new one per item.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical_json(value: Any) -> str:
    """Key-sorted compact JSON: the same value always gives the same text (the basis of stable ids)."""
    return _CANONICAL.encode(value)


def stable_id(value: Any) -> str:
    """A 20-hex-digit id from an item's content (BLAKE2b-80 of its canonical JSON).

    80 bits keep an accidental collision out of reach for any realistic batch (about 1 in 10^12 for a
    billion items) while staying short enough to read in a log line.
    """
    # surrogatepass: an item holding a lone surrogate still gets its id, then fails validation as an item
    return hashlib.blake2b(canonical_json(value).encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


class Prepared:
    """An item ready to send: its id, its request, and what to copy to its output line.

    A plain prompt (no messages, images, system prompt or body fields of its own) is validated into its
    request only when :attr:`request` is first read, and carries ``body``: the request body it will send,
    written from the batch's :class:`_Template`. The response cache keys it by that body, so a batch answered
    from the cache never builds (validates) the requests it does not send.
    """

    __slots__ = ("_cap", "_estimate", "_make", "_request", "body", "context", "id", "like")

    def __init__(
        self,
        id: str,
        request: Any = None,  # ChatCompletionRequest; typed loosely to keep pydantic out of module import
        context: Any = None,
        *,
        body: bytes | None = None,
        like: Any = None,
        make: Callable[[], Any] | None = None,
    ) -> None:
        self.id = id
        self.context = context
        self.body = body  # the body as it will be sent, when known before the request is built
        self.like = like  # a request with the same body fields but the prompt (what decides determinism)
        self._request = request
        self._make = make
        self._estimate: int | None = None
        self._cap: int | None = None

    @property
    def request(self) -> Any:
        if self._request is None:
            self._request = self._make()  # type: ignore[misc]
        return self._request

    @property
    def est_prompt_tokens(self) -> int:
        if self._estimate is None:
            self._estimate = estimate(self.request)
            self._cap = completion_cap(self.request)
        return self._estimate

    @property
    def max_completion_tokens(self) -> int | None:
        """:func:`spend.completion_cap` of the request (bounds the completion estimate)."""
        if self._estimate is None:
            self.est_prompt_tokens  # noqa: B018 - computes both
        return self._cap


class _Template:
    """A plain prompt's request body around the prompt: built and validated once per batch, then written for
    each prompt by inserting the prompt's JSON text between ``head`` and ``tail``.

    Every step from prompt to body (the messages, the output schema's instruction or tool, ``cache_prompt``'s
    marks, the model's default, validation, encoding) treats the prompt as an opaque string, and a JSON string
    escapes each character on its own, so the inserted text gives the very bytes the built request encodes
    to. :meth:`make` checks that on two marker prompts, one of them full of characters JSON escapes; anything
    else (an error, a marker not found exactly once) means no template, and every item is built as before.
    """

    __slots__ = ("head", "like", "tail")

    def __init__(self, head: bytes, tail: bytes, like: Any) -> None:
        self.head, self.tail, self.like = head, tail, like

    @classmethod
    def make(cls, build: Callable[[str], Any]) -> _Template | None:
        import os

        marker = f"agentchat-prompt-{os.urandom(8).hex()}"
        try:
            like = build(marker)
            body = like.to_json()
            if body.count(marker.encode()) != 1:
                return None
            head, tail = body.split(marker.encode())
            template = cls(head, tail, like)
            probe = marker + _ESCAPED
            if build(probe).to_json() != template.body(probe):
                return None
        except Exception:
            return None
        return template

    def body(self, prompt: str) -> bytes | None:
        """The body of ``prompt``'s request, or None when the prompt cannot be encoded (a lone surrogate)."""
        try:
            text = _json_text(prompt)
        except ValueError:
            return None
        return self.head + text[1:-1] + self.tail


#: Characters JSON writes escaped or as multi-byte UTF-8: the template is checked on them.
_ESCAPED = '"\\/\n\r\t\b\f\x00\x1f\x7f \u00e9\u20ac\u2028\U0001f600'


def _json_text(value: str) -> bytes:
    from pydantic_core import to_json  # the serializer that encodes the request

    return to_json(value)


@dataclass(slots=True)
class Rejected:
    """An item that cannot be sent (bad shape, bad JSON, a field the reference rejects): recorded, not raised."""

    id: str
    error: InvalidRequestError
    context: Any = None


@dataclass
class InputStats:
    """Counted while items stream through :func:`prepare`."""

    seen: int = 0
    resumed: int = 0
    duplicates: int = 0
    rejected: int = 0
    queued: int = 0
    # id -> fingerprint of the item that claimed it (None when the id is itself derived from the content)
    ids: dict[str, str | None] = field(default_factory=dict)


class _BadLine(Exception):
    """A JSONL line that is not JSON; carries the raw text so the id can be derived from it."""

    def __init__(self, text: str, lineno: int, reason: str) -> None:
        super().__init__(reason)
        self.text = text
        self.lineno = lineno


def parse_prompts(value: Any) -> list[Any]:
    """The ``prompts`` argument after templating: a list, or its JSON / Python-literal text.

    A Jinja template like ``"{{ ti.xcom_pull('rows') }}"`` renders a list as Python repr unless the DAG
    renders native objects, so both JSON and ``ast.literal_eval`` are tried.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise InvalidRequestError(
                    [("prompts", "a string that is neither a JSON list nor a list literal")]
                ) from None
    if isinstance(value, Mapping) or not isinstance(value, Iterable) or isinstance(value, (str, bytes)):
        raise InvalidRequestError([("prompts", f"must be a list of items, got {type(value).__name__}")])
    return list(value)


def iter_jsonl(path: Any) -> Iterator[Any]:
    """Stream the values of a JSONL file (any ``ObjectStoragePath``); blank lines are skipped.

    A line that is not UTF-8 JSON is yielded as a :class:`_BadLine` so it becomes a failed item, not a crash
    (and never a request with U+FFFD in place of what the file really holds). A UTF-8 byte order mark at the
    start of the file is dropped.
    """
    with path.open("rb") as handle:
        for lineno, raw in enumerate(file_lines(handle), start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                shown = raw.decode("utf-8", errors="backslashreplace").strip()
                yield _BadLine(shown, lineno, f"line {lineno} is not valid UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            if not text:
                continue
            try:
                yield json.loads(text)
            except ValueError as exc:
                yield _BadLine(text, lineno, f"line {lineno} is not valid JSON: {exc}")


def count_jsonl(path: Any) -> int:
    """Non-blank lines of a JSONL file, read in 1 MiB blocks (for progress and ETA; cheap next to sending)."""
    count = 0
    carry = b""
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            lines = (carry + block).split(b"\n")
            carry = lines.pop()
            count += sum(1 for line in lines if line.strip())
    return count + (1 if carry.strip() else 0)


def prepare(
    values: Iterable[Any],
    *,
    build_request: Callable[..., Any],
    system_prompt: str | None,
    shared: Mapping[str, Any],
    skip: set[str] | frozenset[str] = frozenset(),
    stats: InputStats | None = None,
) -> Iterator[Prepared | Rejected]:
    """Turn raw items into validated requests, lazily (one item in memory at a time).

    ``shared`` holds the operator's body fields; an item's own fields win, and ``extra_body`` mappings are
    merged. Ids in ``skip`` (already in the output) are passed over without building anything.
    """
    stats = stats if stats is not None else InputStats()
    shared_extra = dict(shared.get("extra_body") or {})

    def plain(prompt: str) -> Any:  # what a plain prompt's request is
        return build_request(compose_messages(prompt=prompt, system_prompt=system_prompt), **dict(shared))

    template: _Template | None = None
    templated = False  # the template is made at the first plain prompt (None when it cannot be)
    for value in values:
        stats.seen += 1
        if isinstance(value, _BadLine):
            item_id = stable_id(value.text)
            if _claim(item_id, None, stats, skip) is _NEW:
                stats.rejected += 1
                yield Rejected(item_id, InvalidItemError(str(value)))
            continue
        try:
            item_id, prompt, messages, item_system, overrides, context = _split(value)
        except InvalidRequestError as exc:
            item_id = _explicit_id(value) or stable_id(value)
            if _claim(item_id, value, stats, skip) is _NEW:
                stats.rejected += 1
                yield Rejected(item_id, InvalidItemError(str(exc), exc.errors))
            continue
        claim = _claim(item_id, value, stats, skip)
        if claim is not _NEW:
            if isinstance(claim, Rejected):
                stats.rejected += 1
                claim.context = context
                yield claim
            continue
        if messages is None and item_system is None and not overrides and isinstance(prompt, str):
            if not templated:
                template, templated = _Template.make(plain), True
            body = template.body(prompt) if template is not None else None
            if body is not None and template is not None:
                stats.queued += 1
                yield Prepared(item_id, None, context, body=body, like=template.like, make=partial(plain, prompt))
                continue
        try:
            params = dict(shared)
            if overrides:
                extra = {**shared_extra, **(overrides.pop("extra_body", None) or {})}
                params.update(overrides)
                if extra:
                    params["extra_body"] = extra
            built = compose_messages(
                prompt=prompt,
                system_prompt=system_prompt if item_system is None else item_system,
                messages=messages,
            )
            request = build_request(built, **params)
        except InvalidRequestError as exc:
            stats.rejected += 1
            yield Rejected(item_id, exc, context)
            continue
        except Exception as exc:  # the same input fails the same way on every rerun: final, never retried
            stats.rejected += 1
            problem = f"could not be made into a request: {type(exc).__name__}: {exc}"
            yield Rejected(item_id, InvalidRequestError([("item", problem)]), context)
            continue
        stats.queued += 1
        yield Prepared(item_id, request, context)


_NEW = object()


def _claim(item_id: str, value: Any, stats: InputStats, skip: set[str] | frozenset[str]) -> Any:
    """``_NEW`` for an id seen the first time; ``None`` to skip it; a :class:`Rejected` for a conflicting item.

    Only items with an explicit id can conflict (a derived id *is* the content), so the fingerprint is
    computed for those alone, keeping the hot path of plain prompts free of a second hash.
    """
    # Ids compare as text: 9 and "9" with the same content are one item, so the fingerprint sees the text id.
    fingerprint = stable_id({**value, "id": item_id}) if _explicit_id(value) is not None else None
    claimed = stats.ids.get(item_id, fingerprint)
    if fingerprint is None or claimed == fingerprint:
        return _NEW if _first_time(item_id, fingerprint, stats, skip) else None
    conflict_id = f"{item_id}#{fingerprint}"
    if not _first_time(conflict_id, fingerprint, stats, skip):
        return None
    message = (
        f"input item {stats.seen} has id {item_id!r}, already taken by an earlier item with other content "
        f'(ids are compared as text, so 7 and "7" are the same id); recorded as {conflict_id!r}, not sent'
    )
    return Rejected(conflict_id, InvalidItemError(message, [("id", f"duplicate id {item_id!r}")]))


def _first_time(item_id: str, fingerprint: str | None, stats: InputStats, skip: set[str] | frozenset[str]) -> bool:
    """Record the id; False when it is a duplicate in this input or already done in the output."""
    if item_id in stats.ids:
        stats.duplicates += 1
        return False
    stats.ids[item_id] = fingerprint
    if item_id in skip:
        stats.resumed += 1
        return False
    return True


def _explicit_id(value: Any) -> str | None:
    if isinstance(value, Mapping) and isinstance(value.get("id"), (str, int)) and not isinstance(value["id"], bool):
        return str(value["id"])
    return None


def _split(value: Any) -> tuple[str, str | None, list[Any] | None, str | None, dict[str, Any], Any]:
    """(id, prompt, messages, system_prompt, body overrides, context) of one item, or InvalidRequestError."""
    if isinstance(value, str):
        return stable_id(value), value, None, None, {}, None
    if isinstance(value, list):
        return stable_id(value), None, value, None, {}, None
    if not isinstance(value, Mapping):
        raise InvalidRequestError(
            [("item", f"must be a string, a message list or an object, not {type(value).__name__}")]
        )
    unknown = [key for key in value if key not in ITEM_KEYS and key not in _BODY]
    if unknown:
        allowed = "id, prompt, messages, images, system_prompt, context, params or a request body field"
        raise InvalidRequestError([(key, f"unknown item key (allowed: {allowed})") for key in sorted(unknown)])
    raw_id = value.get("id")
    if raw_id is None:
        item_id = stable_id(value)
    elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and str(raw_id):
        item_id = str(raw_id)
    else:
        raise InvalidRequestError([("id", "must be a non-empty string or an integer")])
    prompt = value.get("prompt")
    messages = value.get("messages")
    if prompt is None and messages is None:
        raise InvalidRequestError([("prompt", "an item object needs 'prompt' or 'messages'")])
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidRequestError([("prompt", "must be a string")])
    if messages is not None and not isinstance(messages, list):
        raise InvalidRequestError([("messages", "must be a list of message objects")])
    if value.get("images") is not None:  # https / data: URLs or storage URIs, added to the last user message
        prompt, messages = with_images(prompt, messages, value["images"])
    system = value.get("system_prompt")
    if system is not None and not isinstance(system, str):
        raise InvalidRequestError([("system_prompt", "must be a string")])
    overrides = {key: val for key, val in value.items() if key in _BODY}
    params = value.get("params")
    if params is not None:
        if not isinstance(params, Mapping):
            raise InvalidRequestError([("params", "must be an object of request body fields")])
        bad = sorted(key for key in params if key not in _BODY)
        if bad:
            raise InvalidRequestError([(f"params.{key}", "not a request body field") for key in bad])
        overrides = {**params, **overrides}
    return item_id, prompt, messages, system, overrides, value.get("context")
