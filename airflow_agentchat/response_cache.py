"""A response cache across runs: a fingerprint of what decides an answer, and one object per fingerprint.

The key (:meth:`ResponseCache.key`) is a BLAKE2b-160 hash of, and only of, what decides the answer:

* the request body exactly as it is sent (messages with the schema instruction, tools, ``tool_choice``,
  every sampling field, ``model``, DO extras, ``extra_body``, ``metadata``): a changed prompt, schema
  instruction or sampling field is another key;
* the endpoint host (two agents answer the same question differently);
* the output schema (an answer valid against one schema may not be valid against another).

Not in it: the access key, item ids, an item's ``context``, the task or run, or anything else the agent never
sees. A request is only cacheable when it is deterministic: ``temperature`` 0, or a ``seed``. A request that
sets no ``temperature`` gets the endpoint's default, which is not 0 (:data:`DEFAULT_TEMPERATURE`), so it
counts as non-deterministic. Non-deterministic requests are cached only with ``nondeterministic=True``:
otherwise a cache would freeze one sample for good.

Storage: one JSON object per entry. In an object store, ``<cache_path>/<key[:2]>/<key>.json``, one put per
entry (whole by itself); a lookup is one read of one object, however many entries the cache holds. On a local
file system, append-only packs with an index in buckets (:mod:`airflow_agentchat.cache_packs`: creating a file
per entry would cost a batch of misses more than the cache saves). Many tasks and workers can read and write the
same cache at once with no lock: two writers of one key write answers to the same question, and the last one
written is the one read. An entry that is torn, not JSON, of another format, filed under another key or changed
since it was written is a miss, never an error; so is an entry older than ``ttl``.

One call wraps one request: ``key = cache.key(request)``; ``cache.lookup(key)`` before sending (a
:class:`CachedAnswer`, or ``None``); ``cache.store(key, completion, fields)`` after a valid answer. The batch
runner and (later) the completion operator use exactly these.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

FORMAT = "agentchat-response-cache/1"
MODES = ("read_write", "read_only", "refresh")
#: What a request without ``temperature`` is treated as: OpenAI-compatible endpoints default to 1.
DEFAULT_TEMPERATURE = 1.0
_LOCAL = ("file", "local", "")
_RESPONSE = b',"response":'


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


log = logging.getLogger(__name__)


def check_cache_args(cache_path: Any, cache_ttl: Any, cache_mode: Any, cache_nondeterministic: Any) -> None:
    """Refuse bad cache arguments when the DAG is parsed, naming the field and the rule."""
    if (
        cache_path is not None
        and not isinstance(cache_path, (str, os.PathLike))
        and not hasattr(cache_path, "protocol")
    ):
        raise ValueError(f"cache_path must be a storage URI (file://, s3://...) or a path, got {cache_path!r}")
    ttl_seconds(cache_ttl)
    if cache_mode not in MODES:
        raise ValueError(f"cache_mode must be one of {', '.join(MODES)}, got {cache_mode!r}")
    if not isinstance(cache_nondeterministic, bool):
        raise ValueError(f"cache_nondeterministic must be True or False, got {cache_nondeterministic!r}")


def ttl_seconds(value: Any) -> float | None:
    """``cache_ttl`` as seconds: ``None`` (no expiry), a number of seconds > 0, or a ``timedelta``."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"cache_ttl must be None, a number of seconds > 0 or a timedelta, got {value!r}")
    return float(seconds)


def deterministic(request: Any) -> bool:
    """True when the same request should get the same answer: temperature 0, or a seed."""
    if getattr(request, "seed", None) is not None:
        return True
    temperature = getattr(request, "temperature", None)
    return (DEFAULT_TEMPERATURE if temperature is None else temperature) == 0


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """An answer found in the cache: what a result line gets, and what the answer cost when it was paid."""

    fields: dict[str, Any]  # text, finish_reason and output (when a schema validated it)
    usage: dict[str, Any]  # the original usage: paid by the run that stored it, not by this one
    request_id: str | None
    stored_at: float
    response: bytes  # the whole response as JSON, exactly as it was received and encoded

    def completion(self) -> Any:
        """The cached response as a :class:`~airflow_agentchat.models.ChatCompletion` (for the single operator)."""
        from airflow_agentchat.models import ChatCompletion

        completion = ChatCompletion.model_validate_json(self.response)
        completion.meta.update(attempts=0, latency_ms=0.0, request_id=self.request_id, cached=True)
        return completion


class ResponseCache:
    """One cache location, scoped to one endpoint host and one output schema (both part of every key)."""

    def __init__(
        self,
        cache_path: Any,
        *,
        host: str,
        schema: Any = None,
        conn_id: str | None = None,
        ttl: Any = None,
        mode: str = "read_write",
        nondeterministic: bool = False,
    ) -> None:
        check_cache_args(cache_path, ttl, mode, nondeterministic)
        from airflow.sdk import ObjectStoragePath

        text = str(cache_path)
        if "://" not in text and not isinstance(cache_path, ObjectStoragePath):
            text = "file://" + os.path.abspath(text)
        reuse = isinstance(cache_path, ObjectStoragePath) and not conn_id
        self.base: Any = cache_path if reuse else ObjectStoragePath(text, conn_id=conn_id or None)
        self.local = self.base.protocol in _LOCAL
        self._packs: Any = None
        if self.local:
            from airflow_agentchat.cache_packs import LocalPacks

            self._packs = LocalPacks(self.base.path)
        self.ttl = ttl_seconds(ttl)
        self.mode = mode
        self.nondeterministic = nondeterministic
        schema_text = json.dumps(schema, sort_keys=True, separators=(",", ":"), default=str) if schema else ""
        self._prefix = f"{FORMAT}\n{host}\n{schema_text}\n".encode()
        self.hits = self.misses = self.stored = self.errors = 0
        self._bodies, self._checks = True, 16  # key batch items by the body they carry (see key_of, confirm)
        from pydantic_core import from_json  # here, not at module level: DAG files import check_cache_args

        from airflow_agentchat.json_bytes import json_bytes

        self._from_json, self._json_bytes = from_json, json_bytes

    @classmethod
    def for_task(cls, task: Any, host: str, schema: Any = None) -> ResponseCache | None:
        """The cache a task's ``cache_path``, ``cache_ttl``, ``cache_mode``, ``cache_nondeterministic`` and
        ``storage_conn_id`` describe, or ``None`` when ``cache_path`` is unset."""
        if not getattr(task, "cache_path", None):
            return None
        return cls(
            task.cache_path,
            host=host,
            schema=schema,
            conn_id=getattr(task, "storage_conn_id", None),
            ttl=getattr(task, "cache_ttl", None),
            mode=getattr(task, "cache_mode", "read_write"),
            nondeterministic=getattr(task, "cache_nondeterministic", False),
        )

    @property
    def reads(self) -> bool:
        return self.mode != "refresh"

    @property
    def writes(self) -> bool:
        return self.mode != "read_only"

    def __str__(self) -> str:
        return str(self.base)

    # ------------------------------------------------------------------------------------------ keys

    def key(self, request: Any) -> str | None:
        """The request's fingerprint, or ``None`` when it must not be cached (non-deterministic)."""
        if not self.nondeterministic and not deterministic(request):
            return None
        return self.body_key(request.to_json() if hasattr(request, "to_json") else self._json_bytes(request))

    def body_key(self, body: bytes) -> str:
        """The fingerprint of a request body (encoded as it is sent), with this cache's host and schema."""
        return hashlib.blake2b(self._prefix + body, digest_size=20).hexdigest()

    def key_of(self, entry: Any) -> str | None:
        """:meth:`key` of a batch item (:class:`~airflow_agentchat.batch.items.Prepared`): from the body it
        carries when it has one (a plain prompt, whose request is then never built for a hit), else from its
        request."""
        body = entry.body if self._bodies else None
        if body is None:
            return self.key(entry.request)
        if not self.nondeterministic and not deterministic(entry.like):
            return None
        return hashlib.blake2b(self._prefix + body, digest_size=20).hexdigest()  # body_key, one call less

    def confirm(self, key: str | None, entry: Any) -> str | None:
        """The key a new answer of ``entry`` is stored under, once :meth:`key_of` gave ``key`` and missed.

        A body is the request's own encoding (see :class:`~airflow_agentchat.batch.items.Prepared`), and an
        answer filed under it is the answer to that very prompt. The first misses of a cache check it all the
        same against the request actually sent: should they ever differ, bodies are not used again by this
        cache (its lookups build every request) and a warning says so.
        """
        if entry.body is None or not self._bodies or self._checks <= 0:
            return key
        self._checks -= 1
        sent = self.key(entry.request)
        if sent != key:
            self._bodies = False
            log.warning("A batch item's body differs from its request's; the cache now keys the requests themselves")
        return sent

    def _object(self, key: str) -> Any:
        return self.base / key[:2] / f"{key}.json"

    # --------------------------------------------------------------------------------------- reading

    def lookup(self, key: str | None) -> CachedAnswer | None:
        """The entry for ``key``, or ``None``: absent, expired, torn, foreign, or storage failing."""
        if key is None or not self.reads:
            return None
        try:
            data = self._packs.read(key) if self.local else self._object(key).read_bytes()
            if data is None:
                raise FileNotFoundError(key)
        except FileNotFoundError:
            self.misses += 1
            return None
        except Exception as exc:  # a cache that cannot be read costs a request, never the task
            self.errors += 1
            self.misses += 1
            log.warning("Could not read response cache entry %s: %s", key, exc)
            return None
        entry = self._parse(key, data)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def _parse(self, key: str, data: bytes) -> CachedAnswer | None:
        """The entry in ``data``, checked: the head parsed, the response (written last, kept as bytes, never
        parsed here) whole by its length and hash. Anything else is a miss."""
        cut = data.rfind(_RESPONSE)
        if cut < 0 or not data.endswith(b"}"):
            return None
        response = data[cut + len(_RESPONSE) : -1]
        try:
            record = self._from_json(data[:cut] + b"}")
        except ValueError:
            return None
        if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("key") != key:
            return None
        fields, usage, stored_at = record.get("fields"), record.get("usage"), record.get("stored_at")
        if not isinstance(fields, dict) or not isinstance(usage, dict) or not isinstance(stored_at, (int, float)):
            return None
        if record.get("response_size") != len(response) or record.get("response_hash") != _digest(response):
            return None  # torn, or changed since it was written
        if self.ttl is not None and time.time() - stored_at > self.ttl:
            return None
        request_id = record.get("request_id")
        return CachedAnswer(fields, usage, request_id if isinstance(request_id, str) else None, stored_at, response)

    # --------------------------------------------------------------------------------------- writing

    def entry(
        self,
        key: str,
        completion: Any,
        fields: Mapping[str, Any],
        response: bytes | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> bytes:
        """The object stored for one valid answer (``response``: ``completion.to_json()`` if already made;
        ``usage``: what getting it cost, repair rounds included, when more than this completion's)."""
        body = response if response is not None else completion.to_json()
        head = {
            "format": FORMAT,
            "key": key,
            "stored_at": time.time(),
            "fields": dict(fields),
            "usage": dict(usage) if usage is not None else completion.usage_dict(),
            "request_id": completion.meta.get("request_id"),
            "response_size": len(body),
            "response_hash": _digest(body),
        }
        return self._json_bytes(head)[:-1] + _RESPONSE + body + b"}"

    def store(self, key: str | None, completion: Any, fields: Mapping[str, Any]) -> None:
        """Keep one valid answer (ok, and valid against the output schema: the caller checks)."""
        if key is not None and self.writes:
            self.store_many([(key, self.entry(key, completion, fields))])

    def store_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        """Write entries made by :meth:`entry`; a failure is logged and counted, never raised."""
        if not self.writes or not entries:
            return
        if self.local:
            try:
                self._packs.write(entries)
                self.stored += len(entries)
            except Exception as exc:
                self.errors += len(entries)
                log.warning("Could not write %d response cache entries to %s: %s", len(entries), self, exc)
            return
        for key, data in entries:
            try:
                self._object(key).write_bytes(data)  # one put: an object is never seen half written
                self.stored += 1
            except Exception as exc:
                self.errors += 1
                log.warning("Could not write response cache entry %s: %s", key, exc)

    def close(self) -> None:
        """Let go of what lookups keep open (a local cache's packs)."""
        if self._packs is not None:
            self._packs.close()
