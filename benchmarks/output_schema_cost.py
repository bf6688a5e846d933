"""What an output schema costs a batch: 2,000 items at zero latency, with and without ``output_schema``.

    .venv/bin/python benchmarks/output_schema_cost.py          # ~30 s on 2 cores
    .venv/bin/python benchmarks/output_schema_cost.py --quick  # smaller, for a smoke check

``AgentChatBatchOperator.execute`` against the dev server subprocess (``max_concurrency=50``, zero latency,
so the run is CPU-bound and any per-item cost shows), in interleaved rounds of: no schema; a pydantic model
(validated by pydantic); the same schema as a dict (validated by ``jsonschema``). Each schema run sends the
tool and ``tool_choice`` (``output_strategy="auto"``), and the dev server answers with a tool call whose
arguments are validated and written as ``output``. Reported: items/s (median of the rounds) and the batch
process's CPU time per item, so the client's own share is visible apart from the dev server's (which also
works harder: it builds tool arguments from the schema). Target: the schema costs at most 15% of throughput
(ratio >= 0.85) for both validators.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import airflow_env  # noqa: E402

airflow_env()  # before Airflow is imported

from batch_throughput import set_connection  # noqa: E402
from common import machine, write_section  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

TARGET = 0.85


class Triage(BaseModel):
    """The triage of one support ticket (the example DAG's schema)."""

    category: Literal["billing", "login", "outage", "bug", "question"]
    urgency: Literal["low", "medium", "high", "critical"]
    summary: str = Field(max_length=120)


VARIANTS: dict[str, Any] = {"none": None, "pydantic model": Triage, "JSON Schema dict": Triage.model_json_schema()}


def run(n: int, schema: Any, tag: str) -> tuple[float, float]:
    """(items/s, batch-process CPU µs per item) of one ``execute`` with a fresh output."""
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    out = Path(tempfile.mkdtemp(prefix="agentchat-bench-")) / "out.jsonl"
    op = AgentChatBatchOperator(
        task_id="bench_schema",
        agentchat_conn_id="agentchat_bench",
        prompts=[f"Ticket {i} of {tag}: the export drops a column." for i in range(n)],
        output_path=f"file://{out}",
        max_concurrency=50,
        progress_interval=3600,
        output_schema=schema,
    )
    cpu, wall = time.process_time(), time.perf_counter()
    summary = op.execute({"ti": None})  # type: ignore[arg-type]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if summary["succeeded"] != n:
        raise SystemExit(f"batch lost or rejected items: {summary}")
    if schema is not None and "output" not in out.read_text().splitlines()[0]:
        raise SystemExit("schema run wrote no output")
    return n / wall, cpu / n * 1e6


def client_work(schema: Any, n: int = 5000) -> tuple[float, float, float]:
    """Per-item client CPU without the network (µs): building the request, reading the answer, validating.

    The same steps the batch takes per item, timed in this process on a dev-server answer, so the figure
    separates our own cost from the dev server's and from the machine's load.
    """
    import json
    import timeit

    from airflow_agentchat.batch.results import result_line
    from airflow_agentchat.devserver import responses as wire
    from airflow_agentchat.devserver.answers import make_choices, prompt_tokens
    from airflow_agentchat.models import ChatCompletion, build_request
    from airflow_agentchat.structured_output import OutputSpec, message_of, result_fields

    spec = OutputSpec.build(schema) if schema is not None else None
    build = spec.builder(build_request) if spec else build_request
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    messages = [{"role": "user", "content": "Ticket 1: the export drops a column."}]

    def request() -> bytes:
        return build(messages).to_json()  # what the hook sends

    body = json.loads(request())
    choices = make_choices(body, "Ticket 1: the export drops a column.")
    usage = wire.usage(prompt_tokens(body["messages"]), choices)
    answer = encode(wire.completion("id", 0, "agent", body, choices, usage)).encode()
    completion = ChatCompletion.model_validate_json(answer)

    def response() -> None:
        parsed = ChatCompletion.model_validate_json(answer)
        fields, error = result_fields(spec.parse(message_of(parsed))) if spec is not None else ({}, None)
        answered = {"text": parsed.text, "finish_reason": parsed.finish_reason, **fields}
        usage = parsed.usage_dict()
        result_line("x", error, answer=answered, usage=usage, attempts=1, latency_ms=1.0, response=parsed.to_json())

    per = [min(timeit.repeat(f, number=n, repeat=3)) / n * 1e6 for f in (request, response)]
    check = (
        min(timeit.repeat(lambda: result_fields(spec.parse(message_of(completion))), number=n, repeat=3)) / n * 1e6
        if spec
        else 0.0
    )
    return per[0], per[1], check


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (400, 2) if args.quick else (2000, 5)

    from airflow_agentchat.devserver import DevServer

    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpus: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with DevServer(latency_ms=0) as server:
        set_connection(server.url)
        for name, schema in VARIANTS.items():  # warm-up: imports, pools, validator caches
            run(200, schema, f"warm-{name}")
        for r in range(rounds):
            for name, schema in VARIANTS.items():
                rate, cpu = run(n, schema, f"{r}-{name}")
                rates[name].append(rate)
                cpus[name].append(cpu)
                print(f"round {r}: {name}: {rate:.0f} items/s, {cpu:.0f} µs CPU/item", flush=True)

    work = {name: client_work(schema) for name, schema in VARIANTS.items()}
    base = statistics.median(rates["none"])
    base_cpu = statistics.median(cpus["none"])
    rows, failures = [], []
    for name in VARIANTS:
        rate, cpu = statistics.median(rates[name]), statistics.median(cpus[name])
        ratio = rate / base
        if name != "none" and ratio < TARGET:
            failures.append(f"{name}: {ratio:.3f}")
        extra = "" if name == "none" else f" (+{cpu - base_cpu:.0f})"
        met = "" if name == "none" else ("yes" if ratio >= TARGET else "NO")
        rows.append(f"| {name} | {rate:.0f} | {ratio:.3f}x | {cpu:.0f}{extra} | {met} |")
    work_rows = []
    for name, (req, resp, check) in work.items():
        total = req + resp
        extra = "" if name == "none" else f" (+{total - sum(work['none'][:2]):.0f})"
        work_rows.append(f"| {name} | {req:.1f} | {resp:.1f} | {check:.1f} | {total:.1f}{extra} |")
    verdict = "PASS" if not failures else "FAIL: " + "; ".join(failures)
    print(verdict)
    all_rounds = ", ".join(f"{k} {[round(v) for v in vals]}" for k, vals in rates.items())
    write_section(
        "Output schema cost",
        f"""
`AgentChatBatchOperator.execute`, {n:,} prompts at zero latency against the dev server subprocess,
`max_concurrency=50`, with no schema, with a pydantic model and with the same schema as a JSON Schema dict
(`output_strategy="auto"`: the tool and `tool_choice` go with every request, the dev server answers with a
tool call, every answer is validated and written as `output`). Medians of {rounds} interleaved rounds (all
rounds, items/s: {all_rounds}). CPU is the batch process's own time per item (the dev server runs in
another process and also does more work with a schema: it builds the arguments from it).

| output_schema | items/s | vs none | batch CPU µs/item | ratio >= {TARGET} |
|---|---|---|---|---|
{chr(10).join(rows)}

Where the client's extra time goes, per item, without the network (best of 3 x 5,000 in this process; "check"
is `result_fields` alone, the validation itself; the rest of the difference is carrying the schema: the tool
serialized into every request body, and the tool call parsed from every answer):

| output_schema | request µs | answer + line µs | check µs | total µs |
|---|---|---|---|---|
{chr(10).join(work_rows)}

Verdict: {verdict}. Load average during the run: {os.getloadavg()[0]:.1f} (other jobs shared the 2 cores;
all figures move with it; the ratios are what to compare). Machine: {machine()}. Reproduce:
`.venv/bin/python benchmarks/output_schema_cost.py`.
""",
    )
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
