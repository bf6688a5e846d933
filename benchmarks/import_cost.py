"""What importing the provider from a DAG file costs, on top of ``airflow.sdk``.

DAG files are parsed constantly, so the budget is our own modules: at most 50 ms for the operators, measured
in fresh interpreters (median of several) as the time of ``import airflow_agentchat.operators...`` after
``import airflow.sdk``. ``python -X importtime`` then lists which modules our import added, to check that it
pulls in no HTTP client machinery (no httpx/aiohttp/httpx-sse module beyond what ``airflow.sdk`` loaded).

Run: ``.venv/bin/python benchmarks/import_cost.py`` (or ``make bench``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import airflow_env, machine, median, run_python, write_section

RUNS = 7
BUDGET_MS = 50.0
MODULES = {
    "operators.agent_chat": "airflow_agentchat.operators.agent_chat",
    "operators.batch": "airflow_agentchat.operators.batch",
    "operators.branch": "airflow_agentchat.operators.branch",
    "hooks.agent_chat": "airflow_agentchat.hooks.agent_chat",
    "decorators.agent_chat": "airflow_agentchat.decorators.agent_chat",
    "decorators.agent_chat_branch": "airflow_agentchat.decorators.agent_chat_branch",
}
TIMER = """
import importlib, json, sys, time
import airflow.sdk
before = set(sys.modules)
t = time.perf_counter()
importlib.import_module({module!r})
elapsed = (time.perf_counter() - t) * 1000
added = sorted(m for m in set(sys.modules) - before)
print(json.dumps({{"ms": elapsed, "added": added}}))
"""
HTTP_PREFIXES = ("httpx", "aiohttp", "httpx_sse", "httpx_aiohttp", "httpcore", "pydantic")


def measure(module: str) -> tuple[float, list[str]]:
    runs = [json.loads(run_python(TIMER.format(module=module)).strip().splitlines()[-1]) for _ in range(RUNS)]
    return median([r["ms"] for r in runs]), runs[0]["added"]


def main() -> int:
    airflow_env()
    rows, failures = [], []
    for label, module in MODULES.items():
        try:
            ms, added = measure(module)
        except Exception as exc:  # a module that does not exist yet is reported, not fatal
            rows.append(f"| `{label}` | n/a ({type(exc).__name__}) | |")
            continue
        heavy = [m for m in added if m.split(".")[0] in HTTP_PREFIXES]
        ours = [m for m in added if m.startswith("airflow_agentchat")]
        if label.startswith(("operators", "decorators")) and ms > BUDGET_MS:
            failures.append(f"{label}: {ms:.1f} ms")
        if label.startswith("operators") and heavy:
            failures.append(f"{label} imports {heavy}")
        rows.append(f"| `{label}` | {ms:.1f} | {len(added)} ({len(ours)} ours) | {', '.join(heavy) or 'none'} |")
        print(f"{label}: {ms:.1f} ms, {len(added)} modules added, http/pydantic modules added: {heavy or 'none'}")
    verdict = "PASS" if not failures else "FAIL: " + "; ".join(failures)
    print(verdict)
    write_section(
        "Import cost (DAG parsing)",
        f"""
Time to import each module after `import airflow.sdk` in a fresh interpreter (median of {RUNS}); budget
{BUDGET_MS:.0f} ms for what a DAG file imports (operators, decorator). "HTTP/pydantic modules added" lists
modules of httpx, httpcore, aiohttp, httpx-sse, httpx-aiohttp or pydantic that the import loaded beyond
what `airflow.sdk` already had: the operators must add none.

| module | ms | modules added | HTTP/pydantic modules added |
|---|---|---|---|
{chr(10).join(rows)}

Verdict: {verdict}. Machine: {machine()}. Reproduce: `.venv/bin/python benchmarks/import_cost.py`.
""",
    )
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
