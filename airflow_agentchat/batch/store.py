"""Resumable batch results in object storage: part files, an ownership lease, then one composed JSONL.

Layout, for ``output_path = s3://bucket/run/results.jsonl`` (or ``file://...``)::

    s3://bucket/run/results.jsonl                       the composed result, one line per id
    s3://bucket/run/results.jsonl.lease                 who is writing this output now (JSON, heartbeat)
    s3://bucket/run/results.jsonl.parts/
        part-20260101T000000123456-3fa2c1-000000.jsonl  results written while a run was going
        part-20260101T000000123456-3fa2c1-000001.jsonl
        compose-....jsonl.tmp                           the next results.jsonl being written

Durability: a task killed with SIGKILL loses the answers in flight and whatever had not reached storage.
Where the storage can append (``file://``), each run appends every result line to its own part file as it
arrives and hands it to the OS after every burst of results (no fsync: a killed *process* loses nothing the
OS already has). Object stores cannot append, so there every flush writes a *new* part, every
``flush_every`` results or ``flush_interval`` seconds (1 s by default). Part names start with the UTC time of
the run, so sorting them by name replays the history in order.

Resume: :meth:`ResultStore.scan` reads the composed output and every part; a line that is not complete JSON
(the torn tail of a part written when the worker died) is ignored. Ids already recorded are skipped by the
next run; with ``retry_failed`` an id whose last line is a retryable error is sent again, and its new line
supersedes the old one. :meth:`ResultStore.compose` writes each id's *last* line once into a temporary
object, moves it over ``output_path`` and only then deletes the parts it read, so a crash at any moment
leaves either the parts or the output (or both, which the next compose deduplicates).

Ownership: one run writes one output at a time. :meth:`ResultStore.open` takes the lease (see
:class:`Lease`) before anything is sent, which also proves the location is writable; compose deletes only
the ``part-*`` files it composed and never removes a folder that still holds something.

Memory: per id only a counter is kept; lines stream from storage to storage in blocks.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_agentchat.batch.items import InvalidItemError
from airflow_agentchat.compat import file_lines
from airflow_agentchat.exceptions import AgentChatError, InvalidRequestError
from airflow_agentchat.usage import ZERO, TokenUsage, UsageTally

#: Kinds of error that sending again cannot fix (the item itself is malformed): never retried on resume.
FINAL_ERROR_TYPES = frozenset({InvalidRequestError.kind, InvalidItemError.kind})
_LOCAL = ("file", "local", "")


class OutputPathError(AgentChatError, kind="output_path_error"):
    """``output_path`` cannot be used: not writable, not a valid location, or held by another live run."""


def to_path(value: Any, conn_id: str | None = None) -> Any:
    """An ``ObjectStoragePath`` from a URI string (or the path itself); a bare path means ``file://``.

    ``conn_id`` names the Airflow connection holding the storage credentials. Without it, a plain
    ``s3://bucket/key`` uses no connection (only ambient credentials), and ``s3://conn_id@bucket/key`` is the
    URI form of the same choice.
    """
    from airflow.sdk import ObjectStoragePath

    if isinstance(value, ObjectStoragePath):
        return ObjectStoragePath(value, conn_id=conn_id) if conn_id else value
    text = str(value)
    if "\x00" in text:
        raise ValueError("it contains a NUL byte, which no storage accepts in a name")
    if "://" not in text:
        text = "file://" + os.path.abspath(text)
    return ObjectStoragePath(text, conn_id=conn_id or None)


def iter_records(path: Any) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """``(line, record)`` for every complete result line of one file; torn or foreign lines are skipped."""
    from pydantic_core import from_json

    with path.open("rb") as handle:
        for raw in file_lines(handle):
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            try:
                record = from_json(line)  # jiter: 2.5x json.loads, which compose pays for every line
            except ValueError:
                try:
                    record = json.loads(line)  # a lone surrogate's escape, which jiter refuses
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
    usage: TokenUsage = ZERO  # tokens paid for by the lines found (a budget counts them as spent)
    paid: int = 0  # lines whose answer was paid for (their mean completion helps a forecast)
    cost: float = 0.0  # the ``cost`` of the lines found, each priced by the connection that answered it
    unpriced: TokenUsage = ZERO  # the usage of lines with no ``cost`` (written while prices were unset)


@dataclass
class ComposeResult:
    """Counts over the composed output (all runs), for the task summary and ``max_failed_fraction``."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    usage: TokenUsage = ZERO
    error_types: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0  # the lines' ``cost``, each priced by the connection that answered it
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)  # conn_id -> answers, errors, cost


class Lease:
    """``<output>.lease``: the identity and heartbeat of the run writing an output, on any backend.

    Object stores have no locks, so this is a claim plus a check: write our token, wait a moment, read it
    back; whoever's token is there owns the output. A holder is live while its heartbeat (refreshed by the
    running batch every ``stale_after / 4`` seconds) is younger than ``stale_after``. A held lease may be
    taken over at once by a later try of the *same* task instance (its earlier try is dead: Airflow runs
    one try at a time) and by anyone when the holder ran on this host under a pid that no longer exists.
    """

    def __init__(self, output: Any, owner: Mapping[str, Any] | None, *, stale_after: float = 60.0) -> None:
        self.output = output
        self.path = output.parent / f"{output.name}.lease"
        self.stale_after = float(stale_after)
        self.local = output.protocol in _LOCAL
        self.token = os.urandom(12).hex()
        self.owner = {
            **{key: (owner or {}).get(key) for key in ("dag_id", "task_id", "run_id", "map_index", "try_number")},
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "token": self.token,
        }

    @property
    def interval(self) -> float:
        """Seconds between heartbeats."""
        return self.stale_after / 4

    def read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write(self, *, exclusive: bool) -> None:
        data = json.dumps({**self.owner, "heartbeat": time.time()}).encode()
        if self.local:
            # exclusive create: two local runs starting together cannot both see "no lease"
            local = self.path.path
            if exclusive:
                fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                return
            tmp = f"{local}.{self.token}.tmp"
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, local)
        else:
            self.path.write_bytes(data)

    def describe(self, holder: Mapping[str, Any]) -> str:
        who = ", ".join(f"{key}={holder.get(key)}" for key in ("dag_id", "task_id", "run_id", "map_index"))
        age = time.time() - float(holder.get("heartbeat") or 0)
        return f"{who} on {holder.get('hostname')} pid {holder.get('pid')}, heartbeat {age:.0f} s ago"

    def _may_take(self, holder: Mapping[str, Any]) -> bool:
        if holder.get("token") == self.token:
            return True
        heartbeat = holder.get("heartbeat")
        if not isinstance(heartbeat, (int, float)) or time.time() - heartbeat > self.stale_after:
            return True
        ti = ("dag_id", "task_id", "run_id", "map_index")
        if all(self.owner[key] is not None for key in ti) and all(holder.get(key) == self.owner[key] for key in ti):
            return True  # a later try of this task instance: the earlier try is gone
        return holder.get("hostname") == self.owner["hostname"] and not _pid_alive(holder.get("pid"))

    def acquire(self, settle: float | None = None) -> None:
        """Take the lease or raise :class:`OutputPathError` naming the live holder; nothing is sent before."""
        holder = self.read()
        if holder is not None and not self._may_take(holder):
            raise OutputPathError(
                f"output_path {self.output} is being written by another live run ({self.describe(holder)}); "
                f"two tasks must not share an output. The lease is {self.path}."
            )
        try:
            self._write(exclusive=holder is None)
        except FileExistsError:  # another local run created it between our read and our write
            holder = self.read() or {}
            raise OutputPathError(
                f"output_path {self.output} is being written by another live run ({self.describe(holder)})"
            ) from None
        # A concurrent claim on an object store lands last-writer-wins; wait for it, then see who won.
        time.sleep(settle if settle is not None else (0.0 if self.local else 1.0))
        holder = self.read()
        if holder is None or holder.get("token") != self.token:
            raise OutputPathError(
                f"output_path {self.output} was claimed by another run at the same moment "
                f"({self.describe(holder or {})})"
            )

    def refresh(self) -> None:
        """Renew the heartbeat; raise if another run has taken the lease over (this one was presumed dead)."""
        holder = self.read()
        if holder is None or holder.get("token") != self.token:
            raise OutputPathError(
                "this run lost the lease on its output (its heartbeat was older than "
                f"{self.stale_after:.0f} s and another run took over: {self.describe(holder or {})})"
            )
        self._write(exclusive=False)

    def release(self) -> None:
        holder = self.read()
        if holder is not None and holder.get("token") == self.token:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown: assume alive, wait for the heartbeat to go stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ResultStore:
    """Resumable JSONL writer for one ``output_path``; one live run per output (see :class:`Lease`)."""

    def __init__(
        self,
        output_path: Any,
        *,
        flush_every: int = 1000,
        flush_interval: float = 1.0,
        owner: Mapping[str, Any] | None = None,
        lease_timeout: float = 60.0,
        conn_id: str | None = None,
    ) -> None:
        try:
            self.output = to_path(output_path, conn_id)
        except ValueError as exc:
            raise OutputPathError(f"output_path {str(output_path)!r} cannot be used: {exc}") from None
        self.parts_dir = self.output.parent / f"{self.output.name}.parts"
        self.flush_every = max(1, int(flush_every))
        self.flush_interval = float(flush_interval)
        self.appends = self.output.protocol in _LOCAL
        self.lease = Lease(self.output, owner, stale_after=lease_timeout)
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}"
        self.run_token = f"{stamp}-{os.urandom(3).hex()}"
        self._seq = 0
        self._buffer: list[bytes] = []
        self._handle: Any = None  # the append-mode part of this run (local storage)
        self._last_flush = time.monotonic()
        self._occurrences: dict[str, int] = {}

    # -------------------------------------------------------------------------------------- ownership

    def open(self) -> None:
        """Before the first request: take the lease and make sure results can be written here.

        Raises :class:`OutputPathError` naming ``output_path`` when the location cannot be written or another
        live run holds it, so nothing is paid for that could not be kept.
        """
        try:
            if self.appends:
                self.parts_dir.mkdir(parents=True, exist_ok=True)
            self.lease.acquire()
        except OutputPathError:
            raise
        except (OSError, ValueError, NotImplementedError) as exc:
            raise OutputPathError(f"output_path {self.output} cannot be written: {exc}") from exc
        try:
            if self.appends:
                self._handle = open(self._next_part().path, "ab")  # kept open for the whole run
        except OSError as exc:
            self.lease.release()
            raise OutputPathError(f"output_path {self.output} cannot be written: {exc}") from exc

    def heartbeat(self) -> None:
        self.lease.refresh()

    def release(self) -> None:
        """Close this run's part and give the output up (kept for nothing: a kill never gets here)."""
        self.close()
        try:
            self.lease.release()
        except OSError:
            pass  # a stale lease expires by itself

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
        tally, unpriced = UsageTally(), UsageTally()
        for source in sources:
            for _line, record in iter_records(source):
                item_id = record["id"]
                result.lines += 1
                usage = record.get("usage")
                if isinstance(usage, dict):
                    tally.add(usage)
                    result.paid += 1 if usage.get("completion_tokens") else 0
                    if isinstance(cost := record.get("cost"), int | float):
                        result.cost += cost
                    else:
                        unpriced.add(usage)
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
        result.usage = tally.total()
        result.unpriced = unpriced.total()
        return result

    # ----------------------------------------------------------------------------------------- writing

    def record(self, item_id: str, line: bytes) -> None:
        """Keep one result line (JSON, no newline): appended to this run's part, or buffered for the next."""
        self._occurrences[item_id] = self._occurrences.get(item_id, 0) + 1
        if self._handle is not None:
            self._handle.write(line + b"\n")
        else:
            self._buffer.append(line)

    def sync(self) -> None:
        """Hand appended lines to the OS (a write syscall, no fsync: enough to survive a killed process)."""
        if self._handle is not None:
            self._handle.flush()

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

    def put_back(self, lines: list[bytes]) -> None:
        """Return lines a writer could not store: they go out first with the next flush."""
        self._buffer[:0] = lines

    def _next_part(self) -> Any:
        name = f"part-{self.run_token}-{self._seq:06d}.jsonl"
        self._seq += 1
        return self.parts_dir / name

    def write_part(self, lines: list[bytes]) -> None:
        """Write lines as a new part object (blocking: call it in a thread from async code)."""
        if not lines:
            return
        if self._seq == 0 and self.appends:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
        self._next_part().write_bytes(b"\n".join(lines) + b"\n")

    def flush(self) -> None:
        """Write whatever is buffered, now."""
        self.sync()
        self.write_part(self.take())

    def close(self) -> None:
        """Close this run's append-mode part; a run that recorded nothing leaves no empty part behind."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            empty = handle.tell() == 0
            handle.close()
            if empty:
                try:
                    os.unlink(handle.name)
                    os.rmdir(self.parts_dir.path)
                except OSError:
                    pass  # the folder holds other parts (or someone else's files): leave it

    # ----------------------------------------------------------------------------------------- compose

    def compose(self) -> ComposeResult:
        """Write each id's last line once to ``output_path``, then delete the parts read; return the counts.

        An empty batch still leaves an (empty) ``output_path``, so downstream tasks can rely on the file.
        """
        self.flush()
        self.close()
        parts = self._parts()
        if not parts:
            if self.output.exists():
                return self._count(self.output)
            self.output.write_bytes(b"")
            return ComposeResult()
        result = ComposeResult()
        tally = UsageTally()
        remaining = self._occurrences
        tmp = self.parts_dir / f"compose-{self.run_token}.jsonl.tmp"
        block: list[bytes] = []
        with tmp.open("wb") as out:
            for source in [self.output, *parts] if self.output.exists() else parts:
                for line, record in iter_records(source):
                    left = remaining.get(record["id"], 1) - 1
                    remaining[record["id"]] = left
                    if left != 0:
                        continue  # a later line supersedes this one (or it was already written)
                    _tally(result, tally, record)
                    block.append(line)
                    if len(block) >= 2000:
                        out.write(b"\n".join(block) + b"\n")
                        block.clear()
            if block:
                out.write(b"\n".join(block) + b"\n")
        result.usage = tally.total()
        tmp.rename(self.output)
        for part in parts:  # only what was composed: never a file someone else put there
            try:
                part.unlink()
            except FileNotFoundError:
                pass
        if self.appends:
            try:
                os.rmdir(self.parts_dir.path)  # not ObjectStoragePath.rmdir, which is recursive
            except OSError:
                pass  # not empty: a file that is not ours; leave it
        return result

    def _count(self, path: Any) -> ComposeResult:
        result = ComposeResult()
        tally = UsageTally()
        for _line, record in iter_records(path):
            _tally(result, tally, record)
        result.usage = tally.total()
        return result


def _tally(result: ComposeResult, tally: UsageTally, record: dict[str, Any]) -> None:
    result.total += 1
    error = record.get("error")
    failed = record.get("status") == "error" or error is not None
    if failed:
        result.failed += 1
        kind = str(error.get("type")) if isinstance(error, dict) else "error"
        result.error_types[kind] = result.error_types.get(kind, 0) + 1
    else:
        result.succeeded += 1
    usage = record.get("usage")
    if isinstance(usage, dict):
        tally.add(usage)
    cost = record["cost"] if isinstance(record.get("cost"), int | float) else None
    result.cost += cost or 0.0
    conn_id = record.get("conn_id")
    if isinstance(conn_id, str):  # an invalid item, never sent, names no connection
        counts = result.connections.setdefault(conn_id, {"answers": 0, "errors": 0})
        counts["errors" if failed else "answers"] += 1
        if cost is not None:
            counts["cost"] = round(counts.get("cost", 0.0) + cost, 6)
