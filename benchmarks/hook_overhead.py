"""Per-request cost of ``AgentChatHook.create_chat_completion`` against a bare ``httpx.Client.post``.

Both talk to the same dev server (a subprocess, zero latency) in the same run, in alternating rounds so that
noise from this shared machine hits both alike; the figure is the ratio of medians. The hook does more than
the bare loop (validates the request, retries, parses the response into models), and the budget for all of
that is 15 %.

Run: ``.venv/bin/python benchmarks/hook_overhead.py`` (or ``make bench``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import airflow_env, machine, median, use_connection, write_section

ROUNDS = 7
PER_ROUND = 400
LIMIT = 1.15
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Summarise the quarterly numbers for the EMEA region in two sentences."},
]


def main() -> int:
    airflow_env()
    import httpx

    from airflow_agentchat.devserver import DevServer
    from airflow_agentchat.hooks.agent_chat import AgentChatHook

    with DevServer() as server:
        use_connection("bench", server.url)
        hook = AgentChatHook("bench")
        bare = httpx.Client(timeout=30)
        url = f"{server.url}/api/v1/chat/completions"
        body = {"model": "agent", "messages": MESSAGES, "temperature": 0.2}

        def run_bare() -> None:
            response = bare.post(url, params={"agent": "true"}, json=body)
            response.raise_for_status()
            assert response.json()["choices"][0]["message"]["content"]

        def run_hook() -> None:
            assert hook.create_chat_completion(MESSAGES, temperature=0.2).text

        def per_request(fn) -> float:
            started = time.perf_counter()
            for _ in range(PER_ROUND):
                fn()
            return (time.perf_counter() - started) / PER_ROUND

        for fn in (run_bare, run_hook):
            per_request(fn)  # warm up connections, imports and pydantic
        bare_times, hook_times = [], []
        for _ in range(ROUNDS):
            bare_times.append(per_request(run_bare))
            hook_times.append(per_request(run_hook))
        hook.close()
        bare.close()

    bare_us, hook_us = median(bare_times) * 1e6, median(hook_times) * 1e6
    ratio = hook_us / bare_us
    verdict = "PASS" if ratio <= LIMIT else "FAIL"
    print(f"bare httpx.Client.post: {bare_us:.0f} µs/request; hook: {hook_us:.0f} µs/request; ratio {ratio:.3f}")
    print(f"{verdict}: hook/bare ≤ {LIMIT}")
    write_section(
        "Hook overhead",
        f"""
`create_chat_completion` vs a bare `httpx.Client.post` + `response.json()`, same dev server (zero latency,
subprocess), {ROUNDS} alternating rounds of {PER_ROUND} sequential requests, medians.

| client | µs / request |
|---|---|
| bare `httpx.Client.post` | {bare_us:.0f} |
| `AgentChatHook.create_chat_completion` (validate, retry loop, parse to models) | {hook_us:.0f} |
| **ratio** | **{ratio:.3f}** (budget ≤ {LIMIT}: {verdict}) |

Machine: {machine()}. Reproduce: `.venv/bin/python benchmarks/hook_overhead.py`.
""",
    )
    return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
