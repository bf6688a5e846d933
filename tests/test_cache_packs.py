"""A local cache's packs and index (airflow_agentchat/cache_packs.py), on real files: what is written is read
back whatever else writes at once, and what is torn or hostile is a miss, never another entry."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from pathlib import Path

import pytest

from airflow_agentchat.cache_packs import LocalPacks


def key(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def test_entries_are_read_back_by_key_and_the_last_one_written_wins(tmp_path):
    writer = LocalPacks(str(tmp_path))
    writer.write([(key(f"k{i}"), f"entry {i}".encode()) for i in range(600)])
    writer.write([(key("k7"), b"entry 7, refreshed")])
    reader = LocalPacks(str(tmp_path))
    assert reader.read(key("k3")) == b"entry 3"
    assert reader.read(key("k7")) == b"entry 7, refreshed"
    assert reader.read(key("absent")) is None
    assert len(dict(reader.entries())) == 600
    # one pack for the writer, at most one index file per bucket of keys: no file per entry
    assert len(os.listdir(tmp_path / "packs")) == 1 and len(os.listdir(tmp_path / "index")) <= 256


def test_a_reader_sees_its_own_writes_after_loading_a_bucket(tmp_path):
    cache = LocalPacks(str(tmp_path))
    assert cache.read(key("late")) is None  # loads the bucket, empty
    cache.write([(key("late"), b"now here")])
    assert cache.read(key("late")) == b"now here"


def _write_many(root: str, index: int) -> None:
    writer = LocalPacks(root)
    for start in range(0, 2000, 100):  # many small appends, interleaving with the other processes'
        writer.write([(key(f"{index}-{i}"), f"{index}:{i}".encode() * 3) for i in range(start, start + 100)])


def test_processes_writing_at_once_lose_no_entry(tmp_path):
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_many, args=(str(tmp_path), i)) for i in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join()
    assert [p.exitcode for p in writers] == [0, 0, 0, 0]
    reader = LocalPacks(str(tmp_path))
    for index in range(4):
        for i in range(2000):
            assert reader.read(key(f"{index}-{i}")) == f"{index}:{i}".encode() * 3


def test_a_torn_index_line_is_skipped_and_the_next_writers_lines_are_whole(tmp_path):
    LocalPacks(str(tmp_path)).write([(key("first"), b"first entry")])
    bucket = tmp_path / "index" / f"{key('second')[:2]}.idx"
    bucket.parent.mkdir(exist_ok=True)
    with bucket.open("ab") as index:  # a writer killed in the middle of a line
        index.write(f"{key('torn')} 0123-abcd 0".encode())
    LocalPacks(str(tmp_path)).write([(key("second"), b"second entry")])
    reader = LocalPacks(str(tmp_path))
    assert reader.read(key("second")) == b"second entry"
    assert reader.read(key("torn")) is None  # ended by the next write's newline, with its length missing


def test_a_torn_pack_gives_short_bytes_not_another_entry(tmp_path):
    writer = LocalPacks(str(tmp_path))
    writer.write([(key("a"), b"A" * 50), (key("b"), b"B" * 50)])
    pack = next((tmp_path / "packs").iterdir())
    os.truncate(pack, 75)  # "b" torn in the middle
    reader = LocalPacks(str(tmp_path))
    assert reader.read(key("a")) == b"A" * 50
    assert reader.read(key("b")) == b"B" * 25  # short: the response cache's length and hash checks make it a miss


@pytest.mark.parametrize(
    "line",
    [
        "{k} ../../etc-passwd 0 10",  # a path out of the folder
        "{k} 0123-abcd -1 10",
        "{k} 0123-abcd 0 99999999999",  # longer than any entry
        "{k} 0123-abcd 0",
        "{k}0123-abcd 0 10",
        "{k} 0123-abcd 0 10 extra",
    ],
)
def test_hostile_or_garbled_index_lines_are_misses(tmp_path, line):
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "0123-abcd.pack").write_bytes(b"x" * 100)
    (tmp_path / "index").mkdir()
    target = key("hostile")
    (tmp_path / "index" / f"{target[:2]}.idx").write_text("\n" + line.format(k=target) + "\n")
    assert LocalPacks(str(tmp_path)).read(target) is None


def test_a_line_naming_a_missing_pack_raises_file_not_found(tmp_path):
    """The response cache counts that as a miss; anything else unreadable as a storage error."""
    (tmp_path / "index").mkdir()
    target = key("gone")
    (tmp_path / "index" / f"{target[:2]}.idx").write_text(f"\n{target} 0123-abcd 0 10\n")
    with pytest.raises(FileNotFoundError):
        LocalPacks(str(tmp_path)).read(target)


def test_keys_that_are_not_fingerprints_are_refused(tmp_path):
    with pytest.raises(ValueError, match="40 hex digits"):
        LocalPacks(str(tmp_path)).write([("short", b"x")])
    assert not Path(tmp_path / "index").exists()


def test_open_packs_are_bounded_and_closed(tmp_path):
    for i in range(70):  # 70 writers, 70 packs
        LocalPacks(str(tmp_path)).write([(key(f"w{i}"), b"x")])
    reader = LocalPacks(str(tmp_path))
    assert all(reader.read(key(f"w{i}")) == b"x" for i in range(70))
    assert len(reader._readers) <= 64
    reader.close()
    assert reader._readers == {}


def test_the_first_lookup_in_a_bucket_searches_its_text_and_the_next_ones_a_dict(tmp_path):
    LocalPacks(str(tmp_path)).write([(key("q"), b"old")])
    LocalPacks(str(tmp_path)).write([(key("q"), b"new")])
    reader = LocalPacks(str(tmp_path))
    prefix = key("q")[:2]
    assert reader.read(key("q")) == b"new"  # the last line wins in the text search too
    assert isinstance(reader._buckets[prefix], bytes)
    assert reader.read(key("q")) == b"new"
    assert isinstance(reader._buckets[prefix], dict)
    other = next(k for k in (key(f"o{i}") for i in range(5000)) if k[:2] != prefix)
    assert reader.read(other) is None  # another bucket, searched as text, then written to: read again
    reader.write([(other, b"written")])
    assert reader.read(other) == b"written"
