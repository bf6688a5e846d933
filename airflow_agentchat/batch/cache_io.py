"""The batch's reads and writes of the response cache.

A local cache is read and written in the event loop: a lookup is a dict lookup and a ``pread``, and a batch of
entries is one append to the run's pack and one per index bucket (:mod:`airflow_agentchat.cache_packs`), cheaper
than handing them to a thread that would contend with the loop for the GIL. An object-store cache is read in a
pool of one thread per worker (asyncio's default pool has a few) and written one put per entry in those
threads. A batch with fallback connections has one cache per connection (the key names the endpoint), so
pending entries are kept per cache.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_agentchat.batch.items import Prepared
    from airflow_agentchat.response_cache import CachedAnswer, ResponseCache

#: Entries queued for one cache before they are written (local: in one go; object store: a put each, at once).
WRITE_BATCH = 256
#: Local entries queued before they are written (a batch costs an append per index bucket touched, 256 at
#: most), or fewer when they add up to LOCAL_BYTES.
LOCAL_BATCH = 4096
LOCAL_BYTES = 8 << 20


class CacheIO:
    """Lookups and batched writes of the caches of one batch run."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pending: dict[ResponseCache, list[tuple[str, bytes]]] = {}
        self._sizes: dict[ResponseCache, int] = {}  # bytes pending per local cache
        self._pool: Any = None
        self._writing: asyncio.Task[None] | None = None
        self._hits = 0
        self._opened: set[ResponseCache] = set()  # caches looked up, closed by finish()

    async def look_up(self, cache: ResponseCache | None, entry: Prepared) -> tuple[str | None, CachedAnswer | None]:
        """The item's key in ``cache`` and the answer stored under it, if any (``(None, None)`` without one).

        The key is the item's first request's (a repaired answer is found by it too), from the body a plain
        prompt carries (:meth:`ResponseCache.key_of`: its request is never built for a hit); after a miss, the
        key a new answer is filed under (:meth:`ResponseCache.confirm`).
        """
        if cache is None:
            return None, None
        self._opened.add(cache)
        key = cache.key_of(entry)
        if key is not None and cache.reads:
            hit = cache.lookup(key) if cache.local else await self._remote(cache.lookup, key)
            if hit is not None:
                self._hits += 1
                if self._hits % WRITE_BATCH == 0:  # local hits never wait: let the ticker and writers run
                    await asyncio.sleep(0)
                return key, hit
        return cache.confirm(key, entry), None

    async def _remote(self, call: Any, *args: Any) -> Any:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="agentchat-cache")
        return await asyncio.get_running_loop().run_in_executor(self._pool, call, *args)

    def put(self, cache: ResponseCache, key: str, data: bytes) -> None:
        """Queue a cache entry; entries are written in batches (an object store's in threads, so storage never
        stalls the requests)."""
        pending = self._pending.setdefault(cache, [])
        pending.append((key, data))
        if cache.local:
            size = self._sizes[cache] = self._sizes.get(cache, 0) + len(data)
            if len(pending) >= LOCAL_BATCH or size >= LOCAL_BYTES:
                del self._sizes[cache]
                cache.store_many(self._pending.pop(cache))
        elif len(pending) >= WRITE_BATCH and self._writing is None:
            self._writing = asyncio.create_task(self._write(cache, self._pending.pop(cache)))

    async def _write(self, cache: ResponseCache, batch: list[tuple[str, bytes]]) -> None:
        try:  # one put per entry, many at once, in the lookups' threads
            await asyncio.gather(*(self._remote(cache.store_many, [entry]) for entry in batch))
        finally:
            self._writing = None

    async def finish(self) -> None:
        """Wait for the write under way, write what is queued (synchronously, like the store's last flush)."""
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        pending, self._pending, self._sizes = self._pending, {}, {}
        for cache, entries in pending.items():
            cache.store_many(entries)
        for cache in self._opened:
            cache.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
