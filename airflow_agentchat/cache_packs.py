"""A local response cache's storage: append-only packs, and an index of them in buckets by key.

Layout under the cache folder::

    packs/<writer>.pack     entries, end to end; appended by one writer only (a cache object: its process id and
                            a random token), never rewritten
    index/<key[:2]>.idx     one line per entry stored, "<key> <writer> <offset> <length>"; every writer appends

Why not one file per entry: creating a file is the slowest thing a file system commonly does (all the more on
ext4 right after many files were deleted), and a batch that misses would create one per item. Here a batch of
entries costs one append to the writer's pack and one append per index bucket.

A lookup stays small however many entries there are: the first lookup in a bucket reads that bucket's index
file (1/256 of the index) and searches its text; the second makes a dict of it, so from then on (a batch's
case) a lookup is a dict lookup and, for a hit, one ``pread``.

No lock. A pack has one writer. A bucket's new lines go in one ``write`` with ``O_APPEND``, which a local file
system does not interleave with other appends; each write starts with a newline, so a line torn by a crash is
ended by the next write and read as garbage (skipped), never joined to another writer's line. Lines are written
after the entries they point at. When a key has several lines the last one wins (a refresh, or a replacement of
an expired entry). What a line points at is checked by the reader (the response cache checks the entry's key,
length and hash), so a torn, foreign or changed entry is a miss. A folder shared by several machines over NFS is
not safe for concurrent writers (appends there are not atomic): use an object store for that.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Iterator, Sequence

#: What a writer name may be: it becomes a file name, so nothing else is ever opened.
_WRITER = re.compile(rb"[0-9a-f]{1,16}-[0-9a-f]{1,32}")
#: No entry is larger: a line claiming more is garbage.
MAX_ENTRY = 1 << 28
#: Packs kept open for reading at once; beyond this the oldest is closed.
OPEN_PACKS = 64
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_NEW = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _open(path: str, flags: int) -> int:
    """Open ``path`` for writing, making its folder the first time."""
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, flags, 0o644)


def _read_all(path: str) -> bytes:
    fd = os.open(path, _READ)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _lines(text: bytes) -> dict[bytes, bytes]:
    """An index bucket as {key: its last line}."""
    return {line[:40]: line for line in text.split(b"\n") if line[40:41] == b" "}


def _last_line(text: bytes, key: bytes) -> bytes | None:
    """The last line of an index bucket that names ``key`` (every line follows a newline), without splitting."""
    start = text.rfind(b"\n" + key + b" ")
    if start < 0:
        return None
    end = text.find(b"\n", start + 1)
    return text[start + 1 : end if end >= 0 else len(text)]


def _close_all(fds: dict[bytes, int]) -> None:
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


class LocalPacks:
    """One local cache folder: :meth:`read` an entry by key, :meth:`write` a batch of them."""

    def __init__(self, root: str) -> None:
        self.root = root
        # key prefix -> the bucket's text after its first lookup, {key: line} from its second
        self._buckets: dict[str, bytes | dict[bytes, bytes]] = {}
        self._readers: dict[bytes, int] = {}  # writer -> an open pack
        self._writer = f"{os.getpid():x}-{os.urandom(8).hex()}".encode()
        self._created = False  # this writer's pack
        self._finalizer = weakref.finalize(self, _close_all, self._readers)

    # ------------------------------------------------------------------------------------------ read

    def read(self, key: str) -> bytes | None:
        """The bytes the newest index line of ``key`` points at, or ``None`` when no line names it.

        Raises ``OSError`` when a pack cannot be read; a pack that is shorter than the line says gives short
        bytes (the caller's checks make that a miss)."""
        prefix, name = key[:2], key.encode()
        bucket = self._buckets.get(prefix)
        if isinstance(bucket, dict):
            line = bucket.get(name)
        elif bucket is None:  # a first lookup here (a single task makes one): search the bucket's text
            text = self._buckets[prefix] = self._read_bucket(prefix)
            line = _last_line(text, name)
        else:  # a second one (a batch makes many): a dict of the bucket from now on
            lines = self._buckets[prefix] = _lines(bucket)
            line = lines.get(name)
        if line is None:
            return None
        parts = line[41:].split(b" ")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit() or not _WRITER.fullmatch(parts[0]):
            return None
        offset, length = int(parts[1]), int(parts[2])
        if length > MAX_ENTRY:
            return None
        return os.pread(self._reader(parts[0]), length, offset)

    def _read_bucket(self, prefix: str) -> bytes:
        try:
            return _read_all(f"{self.root}/index/{prefix}.idx")
        except FileNotFoundError:
            return b""

    def _reader(self, writer: bytes) -> int:
        fd = self._readers.get(writer)
        if fd is None:
            if len(self._readers) >= OPEN_PACKS:
                os.close(self._readers.pop(next(iter(self._readers))))
            fd = self._readers[writer] = os.open(f"{self.root}/packs/{writer.decode()}.pack", _READ)
        return fd

    def entries(self) -> Iterator[tuple[str, bytes]]:
        """Every key the index names, with the bytes of its newest entry (for inspection and tests)."""
        try:
            names = sorted(os.listdir(f"{self.root}/index"))
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(".idx"):
                for key in _lines(self._read_bucket(name[:-4])):
                    data = self.read(key.decode())
                    if data is not None:
                        yield key.decode(), data

    # ----------------------------------------------------------------------------------------- write

    def write(self, entries: Sequence[tuple[str, bytes]]) -> None:
        """Append ``entries`` (key, bytes) to this writer's pack, then their lines to the index."""
        if not entries:
            return
        wrong = next((key for key, _ in entries if len(key) != 40), None)
        if wrong is not None:
            raise ValueError(f"a cache key is 40 hex digits, got {wrong!r}")
        lines: dict[str, list[bytes]] = {}
        fd = self._open_pack()
        try:
            offset = os.fstat(fd).st_size  # the writer's own pack: its end is where these entries start
            for key, data in entries:
                lines.setdefault(key[:2], []).append(b"%s %s %d %d" % (key.encode(), self._writer, offset, len(data)))
                offset += len(data)
            _write_all(fd, b"".join(data for _, data in entries))
        finally:
            os.close(fd)
        for prefix, group in lines.items():
            self._append(f"{self.root}/index/{prefix}.idx", b"\n" + b"\n".join(group) + b"\n")
            bucket = self._buckets.get(prefix)
            if isinstance(bucket, dict):
                bucket.update((line[:40], line) for line in group)
            elif bucket is not None:
                del self._buckets[prefix]  # read again when next needed, these lines with it

    def _open_pack(self) -> int:
        fd = _open(f"{self.root}/packs/{self._writer.decode()}.pack", _APPEND if self._created else _NEW)
        self._created = True
        return fd

    @staticmethod
    def _append(path: str, data: bytes) -> None:
        fd = _open(path, _APPEND)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the packs kept open for reading (also done when the object is collected)."""
        _close_all(self._readers)
