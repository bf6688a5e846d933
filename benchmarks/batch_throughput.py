"""Batch throughput benchmark: ``AgentChatBatchOperator`` against the dev server, in one command.

    .venv/bin/python benchmarks/batch_throughput.py            # full run (~1-2 minutes on 2 cores)
    .venv/bin/python benchmarks/batch_throughput.py --quick    # smaller numbers, for a smoke check

Measures, against one dev server subprocess on 127.0.0.1 (so client and server do not share a GIL):

1. **Latency bound**: 2,000 prompts, 100 ms server latency, ``max_concurrency=50``. Ideal wall time is
   items / concurrency x latency = 4.0 s; target within 1.1x (median of interleaved rounds). A bare
   ``aiohttp`` loop sending the same requests in the same rounds shows how much of the gap is the server's
   and the machine's (timer granularity, bursts of 50 answers at once) before any client work. The
   sequential hook (one request at a time) is timed on a sample and scaled; target at least 20x slower.
2. **CPU bound**: zero latency, same concurrency; items/second of the operator vs a bare ``aiohttp`` loop
   (target >= 0.35x) and a bare ``httpx.AsyncClient`` loop (target >= 3x), interleaved rounds in the same
   run, medians reported. Durability cost: the engine's rate (``items_per_s``) writing ``file://`` (every
   result appended and handed to the OS per burst) vs ``memory://`` (an object store: a part per second);
   target >= 0.9x.
3. **Memory**: the operator over a 2,000- and a 20,000-line JSONL input, each in a fresh subprocess; peak
   RSS (``ru_maxrss``) below 300 MB and growing less than 60 MB between the two.

The operator is run through ``execute`` with a minimal context (no scheduler), reading and writing
``file://`` paths, so every figure includes input parsing, validation, result files and the final compose.
Prints a Markdown table for ``benchmarks/RESULTS.md`` and exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import airflow_env  # noqa: E402

airflow_env()  # before Airflow is imported

KEY = "sk-bench-not-a-real-key"
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Summarise item 1 in one line."}]}


def set_connection(url: str) -> None:
    os.environ["AIRFLOW_CONN_AGENTCHAT_BENCH"] = json.dumps({"conn_type": "agentchat", "host": url, "password": KEY})


def prompts(n: int, tag: str) -> list[str]:
    return [f"Summarise item {i} of run {tag} in one line." for i in range(n)]


def run_operator(
    n: int, concurrency: int, tag: str, *, input_path: str | None = None, output: str | None = None
) -> float:
    """Wall time of one ``execute`` (fresh output, so nothing is resumed)."""
    return run_summary(n, concurrency, tag, input_path=input_path, output=output)[0]


def run_summary(
    n: int, concurrency: int, tag: str, *, input_path: str | None = None, output: str | None = None
) -> tuple[float, dict]:
    """Wall time and summary of one ``execute``; ``output`` defaults to a fresh ``file://`` path."""
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    out = output or f"file://{Path(tempfile.mkdtemp(prefix='agentchat-bench-')) / 'out.jsonl'}"
    kwargs = {"input_path": input_path} if input_path else {"prompts": prompts(n, tag)}
    op = AgentChatBatchOperator(
        task_id=f"bench_{tag}",
        agentchat_conn_id="agentchat_bench",
        output_path=out,
        max_concurrency=concurrency,
        progress_interval=3600,
        **kwargs,
    )
    started = time.perf_counter()
    summary = op.execute({"ti": None})  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    if summary["succeeded"] != n:
        raise SystemExit(f"batch lost items: {summary}")
    return elapsed, summary


async def bare_aiohttp(url: str, n: int, concurrency: int) -> float:
    import aiohttp

    data = json.dumps(BODY).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    target = f"{url}/api/v1/chat/completions?agent=true"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                async with session.post(target, data=data, headers=headers) as response:
                    json.loads(await response.read())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


async def bare_httpx(url: str, n: int, concurrency: int) -> float:
    import httpx

    data = json.dumps(BODY).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                response = await client.post(f"{url}/api/v1/chat/completions?agent=true", content=data, headers=headers)
                response.json()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def sequential_hook(sample: int) -> float:
    """Seconds per request of the sync hook, one request at a time."""
    from airflow_agentchat.hooks.agent_chat import AgentChatHook

    hook = AgentChatHook("agentchat_bench")
    hook.create_chat_completion([{"role": "user", "content": "warm up"}])
    started = time.perf_counter()
    for i in range(sample):
        hook.create_chat_completion([{"role": "user", "content": f"sequential {i}"}])
    hook.close()
    return (time.perf_counter() - started) / sample


def memory_child(url: str, n: int) -> None:
    """Subprocess body: run one batch over an n-line JSONL input, print peak RSS in MB."""
    set_connection(url)
    path = Path(tempfile.mkdtemp(prefix="agentchat-bench-mem-")) / "input.jsonl"
    with path.open("w") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": f"item-{i}", "prompt": f"Summarise item {i} in one line."}) + "\n")
    elapsed = run_operator(n, 50, f"mem{n}", input_path=f"file://{path}")
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    end_kb = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            end_kb = int(line.split()[1])
    print(
        json.dumps(
            {
                "items": n,
                "peak_rss_mb": round(peak_kb / 1024, 1),
                "end_rss_mb": round(end_kb / 1024, 1),
                "elapsed_s": round(elapsed, 2),
            }
        )
    )


def memory_run(url: str, n: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--memory-child", str(n), "--url", url]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    import aiohttp
    import httpx
    from common import machine as common_machine

    return f"{common_machine()}, httpx {httpx.__version__}, aiohttp {aiohttp.__version__}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke check, targets not judged)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of each comparison")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.url, args.memory_child)
        return 0

    from airflow_agentchat.devserver import DevServer

    concurrency = 50
    n_latency, n_cpu, n_small, n_large = (400, 1000, 500, 2000) if args.quick else (2000, 4000, 2000, 20000)
    results: dict[str, object] = {"machine": machine()}
    with DevServer() as server:
        set_connection(server.url)
        run_operator(200, concurrency, "warmup")

        # 1. latency bound: rounds interleaved with bare aiohttp, which shows what the server and the machine
        # add to the ideal before any client work
        server.configure(latency_ms=100)
        walls: list[float] = []
        bare: list[float] = []
        for r in range(args.rounds):
            bare.append(asyncio.run(bare_aiohttp(server.url, n_latency, concurrency)))
            walls.append(run_operator(n_latency, concurrency, f"latency{r}"))
        wall, bare_wall = statistics.median(walls), statistics.median(bare)
        ideal = n_latency / concurrency * 0.1
        per_request = sequential_hook(20)
        sequential = per_request * n_latency
        results["latency"] = {
            "items": n_latency,
            "wall_s": round(wall, 2),
            "ideal_s": round(ideal, 2),
            "vs_ideal": round(wall / ideal, 3),
            "aiohttp_wall_s": round(bare_wall, 2),
            "aiohttp_vs_ideal": round(bare_wall / ideal, 3),
            "all_rounds": {"batch": [round(w, 3) for w in walls], "aiohttp": [round(w, 3) for w in bare]},
            "sequential_s_scaled": round(sequential, 1),
            "speedup_vs_sequential": round(sequential / wall, 1),
        }

        # 2. cpu bound, interleaved so background load hits every contender alike
        server.configure(latency_ms=0)
        from airflow.sdk.io import attach
        from fsspec.implementations.memory import MemoryFileSystem

        attach("memory", fs=MemoryFileSystem())  # stands in for an object store: no append, parts only
        rates: dict[str, list[float]] = {
            "batch": [],
            "aiohttp": [],
            "httpx": [],
            "engine_file": [],
            "engine_memory": [],
        }
        for r in range(args.rounds):
            rates["aiohttp"].append(n_cpu / asyncio.run(bare_aiohttp(server.url, n_cpu, concurrency)))
            wall, summary = run_summary(n_cpu, concurrency, f"cpu{r}")
            rates["batch"].append(n_cpu / wall)
            rates["engine_file"].append(summary["items_per_s"])
            _, summary = run_summary(n_cpu, concurrency, f"mem{r}", output=f"memory:///bench-{r}/out.jsonl")
            rates["engine_memory"].append(summary["items_per_s"])
            rates["httpx"].append(n_cpu / asyncio.run(bare_httpx(server.url, n_cpu, concurrency)))
        med = {name: statistics.median(values) for name, values in rates.items()}
        results["cpu"] = {
            "items": n_cpu,
            "rounds": args.rounds,
            "batch_items_per_s": round(med["batch"]),
            "aiohttp_items_per_s": round(med["aiohttp"]),
            "httpx_items_per_s": round(med["httpx"]),
            "batch_vs_aiohttp": round(med["batch"] / med["aiohttp"], 3),
            "batch_vs_httpx": round(med["batch"] / med["httpx"], 2),
            "engine_file_items_per_s": round(med["engine_file"]),
            "engine_memory_items_per_s": round(med["engine_memory"]),
            "append_vs_parts": round(med["engine_file"] / med["engine_memory"], 3),
            "all_rounds": {name: [round(v) for v in values] for name, values in rates.items()},
        }

        # 3. memory
        small = memory_run(server.url, n_small)
        large = memory_run(server.url, n_large)
        results["memory"] = {
            "small": small,
            "large": large,
            "growth_mb": round(large["peak_rss_mb"] - small["peak_rss_mb"], 1),
        }

    lat, cpu, mem = results["latency"], results["cpu"], results["memory"]
    checks = {
        "latency wall <= 1.1x ideal": lat["vs_ideal"] <= 1.1,  # type: ignore[index]
        ">= 20x sequential hook": lat["speedup_vs_sequential"] >= 20,  # type: ignore[index]
        ">= 0.35x bare aiohttp": cpu["batch_vs_aiohttp"] >= 0.35,  # type: ignore[index]
        ">= 3x bare httpx": cpu["batch_vs_httpx"] >= 3,  # type: ignore[index]
        "append >= 0.9x parts": cpu["append_vs_parts"] >= 0.9,  # type: ignore[index]
        "peak RSS < 300 MB": mem["large"]["peak_rss_mb"] < 300,  # type: ignore[index]
        "RSS growth < 60 MB": mem["growth_mb"] < 60,  # type: ignore[index]
    }
    results["checks"] = checks
    print(json.dumps(results, indent=2))
    print()
    print(f"Machine: {results['machine']}")
    print()
    rows = [
        (
            f"{lat['items']:,} prompts, 100 ms latency, 50 in flight: wall time",  # type: ignore[index]
            f"{lat['wall_s']} s = {lat['vs_ideal']}x ideal {lat['ideal_s']} s",  # type: ignore[index]
            "<= 1.1x ideal",
            checks["latency wall <= 1.1x ideal"],
        ),
        (
            "same requests, bare aiohttp loop (no client work: the server's and machine's share)",
            f"{lat['aiohttp_wall_s']} s = {lat['aiohttp_vs_ideal']}x ideal",  # type: ignore[index]
            "(reference)",
            True,
        ),
        (
            "same, vs sequential hook (20-request sample, scaled)",
            f"{lat['speedup_vs_sequential']}x faster ({lat['sequential_s_scaled']} s sequential)",  # type: ignore[index]
            ">= 20x",
            checks[">= 20x sequential hook"],
        ),
        (
            f"0 ms latency, {cpu['items']:,} prompts: batch vs bare aiohttp",  # type: ignore[index]
            f"{cpu['batch_items_per_s']} vs {cpu['aiohttp_items_per_s']} items/s = {cpu['batch_vs_aiohttp']}x",  # type: ignore[index]
            ">= 0.35x",
            checks[">= 0.35x bare aiohttp"],
        ),
        (
            "same, batch vs bare httpx.AsyncClient",
            f"{cpu['batch_items_per_s']} vs {cpu['httpx_items_per_s']} items/s = {cpu['batch_vs_httpx']}x",  # type: ignore[index]
            ">= 3x",
            checks[">= 3x bare httpx"],
        ),
        (
            "durability: engine rate, every result appended (file://) vs a part a second (memory://)",
            f"{cpu['engine_file_items_per_s']} vs {cpu['engine_memory_items_per_s']} items/s"  # type: ignore[index]
            f" = {cpu['append_vs_parts']}x",  # type: ignore[index]
            ">= 0.9x",
            checks["append >= 0.9x parts"],
        ),
        (
            f"peak RSS, {mem['large']['items']:,} items",  # type: ignore[index]
            f"{mem['large']['peak_rss_mb']} MB",  # type: ignore[index]
            "< 300 MB",
            checks["peak RSS < 300 MB"],
        ),
        (
            f"RSS growth {mem['small']['items']:,} -> {mem['large']['items']:,} items",  # type: ignore[index]
            f"{mem['growth_mb']} MB ({mem['small']['peak_rss_mb']} -> {mem['large']['peak_rss_mb']})",  # type: ignore[index]
            "< 60 MB",
            checks["RSS growth < 60 MB"],
        ),
    ]
    table = ["| measurement | figure | target | met |", "|---|---|---|---|"]
    table += [f"| {row[0]} | {row[1]} | {row[2]} | {'yes' if row[3] else 'NO'} |" for row in rows]
    print("\n".join(table))
    if not args.quick:
        from common import write_section

        body = "\n".join(
            [
                "`AgentChatBatchOperator.execute` end to end (input, validation, requests through the hook, part",
                "files, final compose) against the dev server subprocess; `max_concurrency=50`. Latency-bound wall",
                f"times are medians of {cpu['rounds']} rounds interleaved with a bare aiohttp loop sending the same",  # type: ignore[index]
                f"requests (all rounds, s: batch {lat['all_rounds']['batch']},"  # type: ignore[index]
                f" aiohttp {lat['all_rounds']['aiohttp']}).",  # type: ignore[index]
                f"Zero-latency rates are medians of {cpu['rounds']} interleaved rounds (all rounds: batch"  # type: ignore[index]
                f" {cpu['all_rounds']['batch']}, aiohttp {cpu['all_rounds']['aiohttp']}, httpx"  # type: ignore[index]
                f" {cpu['all_rounds']['httpx']} items/s).",  # type: ignore[index]
                f"Memory: fresh subprocess per size, JSONL input; RSS at the end {mem['small']['end_rss_mb']} MB"  # type: ignore[index]
                f" (2,000) and {mem['large']['end_rss_mb']} MB (20,000).",  # type: ignore[index]
                "",
                *table,
                "",
                f"Machine: {results['machine']}. Reproduce: `.venv/bin/python benchmarks/batch_throughput.py`.",
                "",
                NOTES,
            ]
        )
        write_section("Batch throughput", body)
    return 0 if args.quick or all(checks.values()) else 1


NOTES = """Latency bound: the ideal (items / concurrency x latency) assumes a server that answers in exactly 100 ms
and a client that costs nothing. The bare aiohttp row, measured in the same rounds, is that floor on this
machine: the dev server's timers, and bursts of 50 answers arriving together that both sides work through one
by one. The batch's own cost is the difference between the two rows. It was cut by: one TLS context per
process (loading the CA bundle took 20 ms before every batch's first request), request bodies written by
pydantic's serializer in one step, requests built from a ready body stream and bodies read straight from the
transport (httpx's header preparation and re-chunking skipped), one pass over the response headers, and a
compose that parses result lines with pydantic-core's jiter.
Zero latency: bare aiohttp spends ~80 us of client CPU per request. Through httpx's `AsyncClient.send` the hook
spent ~320 us (URL re-parsed per request, cookie, auth and redirect handling on every response); it now hands
each request straight to the `httpx-aiohttp` transport, and the whole batch, validation, result lines and
files included, costs ~270 us of CPU per item.
Peak RSS is reached while Airflow and the HTTP stack are imported, before the first item; the RSS at the end
of the run (above) is what shows that results and input are streamed, not held.
Durability: on `file://` every result is appended to the run's part as it arrives and handed to the OS once per
event-loop turn (one `write` for the whole burst), so a kill loses only the answers in flight; the "durability"
row compares that with object-store mode (a new part a second) in the same rounds: no measurable cost.
The machine is shared: absolute rates move with other jobs; the ratios, measured in interleaved rounds, are
what the targets judge."""


if __name__ == "__main__":
    sys.exit(main())
