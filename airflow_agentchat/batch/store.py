"""Resumable batch results in object storage: rolling part files, then one composed JSONL.

Layout, for ``output_path = s3://bucket/run/results.jsonl`` (or ``file://...``)::

    s3://bucket/run/results.jsonl                       the composed result, one line per id
    s3://bucket/run/results.jsonl.parts/
        part-20260101T000000123456-3fa2c1-000000.jsonl  results flushed while the batch runs
        part-20260101T000000123456-3fa2c1-000001.jsonl
        compose-....jsonl.tmp                           the next results.jsonl being written

Why parts: object stores cannot append, and a task killed with SIGKILL must lose at most the results of the
last few seconds. Every flush writes a *new* part (every ``flush_every`` results or ``flush_interval``
seconds), which works the same on every ``ObjectStoragePath`` backend. Part names start with the UTC time
of the run, so sorting them by name replays the history in order.

Resume: :meth:`ResultStore.scan` reads the composed output and every part; a line that is not complete JSON
(the torn tail of a part written when the worker died) is ignored. Ids already recorded are skipped by the
next run; with ``retry_failed`` an id whose last line is a retryable error is sent again, and its new line
supersedes the old one. :meth:`ResultStore.compose` writes each id's *last* line once into a temporary
object, moves it over ``output_path`` and only then deletes the parts, so a crash at any moment leaves
either the parts or the output (or both, which the next compose deduplicates).

Memory: per id only a counter is kept; lines stream from storage to storage in blocks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: Error types that sending again cannot fix (the item itself is malformed): never retried on resume.
FINAL_ERROR_TYPES = frozenset({"invalid_request", "invalid_item"})
_LOCAL = ("file", "local", "")


def to_path(value: Any) -> Any:
    """An ``ObjectStoragePath`` from a URI string (or the path itself); a bare path means ``file://``."""
    from airflow.sdk import ObjectStoragePath

    if isinstance(value, ObjectStoragePath):
        return value
    text = str(value)
    if "://" not in text:
        text = "file://" + os.path.abspath(text)
    return ObjectStoragePath(text)


def iter_records(path: Any) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """``(line, record)`` for every complete result line of one file; torn or foreign lines are skipped."""
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # the torn last line of a part written when the worker was killed
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                yield line, record


@dataclass
class ScanResult:
    """What a previous run left behind."""

    done: set[str] = field(default_factory=set)  # ids not to send again
    retrying: int = 0  # ids recorded as failed that will be sent again
    lines: int = 0
    parts: int = 0


@dataclass
class ComposeResult:
    """Counts over the composed output (all runs), for the task summary and ``max_failed_fraction``."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    usage: dict[str, int] = field(
        default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    )
    error_types: dict[str, int] = field(default_factory=dict)


class ResultStore:
    """Buffered, resumable JSONL writer for one ``output_path``; one writer per output at a time."""

    def __init__(self, output_path: Any, *, flush_every: int = 1000, flush_interval: float = 5.0) -> None:
        self.output = to_path(output_path)
        self.parts_dir = self.output.parent / f"{self.output.name}.parts"
        self.flush_every = max(1, int(flush_every))
        self.flush_interval = float(flush_interval)
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}"
        self.run_token = f"{stamp}-{os.urandom(3).hex()}"
        self._seq = 0
        self._buffer: list[bytes] = []
        self._last_flush = time.monotonic()
        self._occurrences: dict[str, int] = {}
        self.parts_written = 0

    # ----------------------------------------------------------------------------------------- reading

    def _parts(self) -> list[Any]:
        try:
            if not self.parts_dir.exists():
                return []
            parts = [p for p in self.parts_dir.iterdir() if p.name.startswith("part-") and p.name.endswith(".jsonl")]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(parts, key=lambda p: p.name)

    def _sources(self) -> list[Any]:
        sources = [self.output] if self.output.exists() else []
        return sources + self._parts()

    def scan(self, *, retry_failed: bool = True) -> ScanResult:
        """Read the output and its parts; return the ids the next run must not send again."""
        result = ScanResult()
        retry: set[str] = set()
        sources = self._sources()
        result.parts = len(sources) - (1 if sources and sources[0] == self.output else 0)
        for source in sources:
            for _line, record in iter_records(source):
                item_id = record["id"]
                result.lines += 1
                self._occurrences[item_id] = self._occurrences.get(item_id, 0) + 1
                error = record.get("error")
                failed = record.get("status") == "error" or error is not None
                kind = error.get("type") if isinstance(error, dict) else None
                if failed and retry_failed and kind not in FINAL_ERROR_TYPES:
                    retry.add(item_id)
                    result.done.discard(item_id)
                else:
                    retry.discard(item_id)
                    result.done.add(item_id)
        result.retrying = len(retry)
        return result

    # ----------------------------------------------------------------------------------------- writing

    def record(self, item_id: str, line: bytes) -> None:
        """Buffer one result line (JSON, no newline)."""
        self._buffer.append(line)
        self._occurrences[item_id] = self._occurrences.get(item_id, 0) + 1

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def due(self) -> bool:
        """Whether the buffer should go to storage now (full, or its oldest result waited long enough)."""
        if not self._buffer:
            return False
        return len(self._buffer) >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_interval

    def take(self) -> list[bytes]:
        """Hand the buffered lines to a writer (the caller writes them with :meth:`write_part`)."""
        lines, self._buffer = self._buffer, []
        self._last_flush = time.monotonic()
        return lines

    def write_part(self, lines: list[bytes]) -> None:
        """Write lines as a new part object (blocking: call it in a thread from async code)."""
        if not lines:
            return
        if self._seq == 0 and self.output.protocol in _LOCAL:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
        name = f"part-{self.run_token}-{self._seq:06d}.jsonl"
        self._seq += 1
        (self.parts_dir / name).write_bytes(b"\n".join(lines) + b"\n")
        self.parts_written += 1

    def flush(self) -> None:
        """Write whatever is buffered, now."""
        self.write_part(self.take())

    # ----------------------------------------------------------------------------------------- compose

    def compose(self) -> ComposeResult:
        """Write each id's last line once to ``output_path``, then delete the parts; return the counts."""
        self.flush()
        parts = self._parts()
        if not parts:
            return self._count(self.output) if self.output.exists() else ComposeResult()
        result = ComposeResult()
        remaining = self._occurrences
        tmp = self.parts_dir / f"compose-{self.run_token}.jsonl.tmp"
        block: list[bytes] = []
        with tmp.open("wb") as out:
            for source in self._sources():
                for line, record in iter_records(source):
                    left = remaining.get(record["id"], 1) - 1
                    remaining[record["id"]] = left
                    if left != 0:
                        continue  # a later line supersedes this one (or it was already written)
                    _tally(result, record)
                    block.append(line)
                    if len(block) >= 2000:
                        out.write(b"\n".join(block) + b"\n")
                        block.clear()
            if block:
                out.write(b"\n".join(block) + b"\n")
        tmp.rename(self.output)
        for part in parts:
            try:
                part.unlink()
            except FileNotFoundError:
                pass
        if self.output.protocol in _LOCAL:
            try:
                self.parts_dir.rmdir()
            except OSError:
                pass  # not empty: someone else's file; leave it
        return result

    def _count(self, path: Any) -> ComposeResult:
        result = ComposeResult()
        for _line, record in iter_records(path):
            _tally(result, record)
        return result


def _tally(result: ComposeResult, record: dict[str, Any]) -> None:
    result.total += 1
    error = record.get("error")
    if record.get("status") == "error" or error is not None:
        result.failed += 1
        kind = str(error.get("type")) if isinstance(error, dict) else "error"
        result.error_types[kind] = result.error_types.get(kind, 0) + 1
    else:
        result.succeeded += 1
    usage = record.get("usage")
    if isinstance(usage, dict):
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = usage.get(key)
            if isinstance(value, int):
                result.usage[key] += value
