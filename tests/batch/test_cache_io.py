"""The batch's cache reads and writes (CacheIO) on a real local cache: lookups by the item's key, writes queued
and written in batches, everything queued written by ``finish`` (the object-store path: tests/test_response_cache.py
on S3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from airflow_agentchat.batch import cache_io
from airflow_agentchat.batch.cache_io import CacheIO
from airflow_agentchat.batch.items import Prepared, prepare
from airflow_agentchat.models import ChatCompletion, build_request
from airflow_agentchat.response_cache import ResponseCache


def _completion(text: str) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    )


def _items(prompts: list[str]) -> list[Prepared]:
    work = prepare(prompts, build_request=build_request, system_prompt=None, shared={"temperature": 0})
    return [entry for entry in work if isinstance(entry, Prepared)]


def test_a_miss_gives_the_key_to_file_the_answer_under_and_a_hit_the_answer(tmp_path: Path) -> None:
    cache = ResponseCache(str(tmp_path / "c"), host="https://agent.example")
    (item,) = _items(["What is 2 + 2?"])

    async def run() -> tuple:
        io = CacheIO(workers=2)
        key, missed = await io.look_up(cache, item)
        assert missed is None and key == cache.key(item.request)
        io.put(cache, key, cache.entry(key, _completion("4"), {"text": "4"}))
        await io.finish()
        return key, await CacheIO(workers=2).look_up(cache, item)

    key, (again, hit) = asyncio.run(run())
    assert again == key and hit is not None
    assert hit.fields == {"text": "4"} and hit.usage["total_tokens"] == 5


def test_without_a_cache_there_is_no_key_and_no_answer() -> None:
    (item,) = _items(["hello"])
    assert asyncio.run(CacheIO(workers=1).look_up(None, item)) == (None, None)


def test_local_writes_wait_for_a_full_batch_then_go_in_one_append(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cache_io, "LOCAL_BATCH", 3)
    cache = ResponseCache(str(tmp_path / "c"), host="https://agent.example")
    items = _items([f"q{i}" for i in range(4)])

    async def run() -> list[int]:
        io = CacheIO(workers=1)
        stored = []
        for item in items:
            key = cache.key(item.request)
            io.put(cache, key, cache.entry(key, _completion("a"), {"text": "a"}))
            stored.append(cache.stored)
        await io.finish()
        stored.append(cache.stored)
        return stored

    assert asyncio.run(run()) == [0, 0, 3, 3, 4]  # the third filled the batch; finish writes what is queued
    assert all(cache.lookup(cache.key(item.request)) is not None for item in items)
    assert len(list((tmp_path / "c" / "packs").iterdir())) == 1  # one writer, one pack


def test_local_writes_also_go_when_the_queued_bytes_add_up(tmp_path: Path, monkeypatch) -> None:
    """Large answers are not held by the thousand: the queue is bounded in bytes too."""
    cache = ResponseCache(str(tmp_path / "c"), host="https://agent.example")
    items = _items([f"long {i}" for i in range(3)])
    entries = [
        (key, cache.entry(key, _completion("x" * 5000), {"text": "x" * 5000}))
        for key in (cache.key(i.request) for i in items)
    ]
    monkeypatch.setattr(cache_io, "LOCAL_BYTES", len(entries[0][1]) + len(entries[1][1]))  # sizes vary a little

    async def run() -> list[int]:
        io = CacheIO(workers=1)
        stored = []
        for key, data in entries:
            io.put(cache, key, data)
            stored.append(cache.stored)
        await io.finish()
        return stored

    assert asyncio.run(run()) == [0, 2, 2]


def test_a_read_only_cache_is_read_but_never_written(tmp_path: Path) -> None:
    writer = ResponseCache(str(tmp_path / "c"), host="https://agent.example")
    reader = ResponseCache(str(tmp_path / "c"), host="https://agent.example", mode="read_only")
    first, second = _items(["one", "two"])
    key = writer.key(first.request)
    writer.store(key, _completion("1"), {"text": "1"})

    async def run() -> tuple:
        io = CacheIO(workers=1)
        hit = await io.look_up(reader, first)
        miss_key, miss = await io.look_up(reader, second)
        io.put(reader, miss_key, reader.entry(miss_key, _completion("2"), {"text": "2"}))
        await io.finish()
        return hit, miss

    (hit_key, hit), miss = asyncio.run(run())
    assert hit_key == key and hit is not None and miss is None
    assert reader.stored == 0 and writer.lookup(writer.key(second.request)) is None
