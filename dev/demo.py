"""``make demo``: run an example DAG with real Airflow against the dev server, then show what it produced.

Offline: a temporary AIRFLOW_HOME with a fresh SQLite metadata DB (removed afterwards unless ``--keep``), the
embedded dev agent server on a free loopback port, and an ``agentchat_default`` connection pointing at it (no
key). Files the DAG writes land in ``demo-output/`` of the checkout (git-ignored) and stay there. The same DAG
runs against a real agent once that connection holds the agent's URL and access key::

    python -m dev.demo [--dag example_agentchat_chain] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "demo-output"
DEFAULT_DAG = "example_agentchat_chain"


def _airflow(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True)


def _xcoms(dag_id: str) -> list[tuple[str, int, str, object]]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.dag_id == dag_id).all()
        return sorted((r.task_id, r.map_index, r.key, r.value) for r in rows)


def _clip(text: object, width: int) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _report(dag_id: str, elapsed: float, server_url: str) -> None:
    rows = _xcoms(dag_id)
    usage = {(task, index): value for task, index, key, value in rows if key == "usage"}
    answers = {(task, index): value for task, index, key, value in rows if key == "return_value"}
    bold, dim, reset = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")
    print(f"\n{bold}airflow-agentchat demo{reset}  ·  {dag_id} ran in {elapsed:.1f} s with real Airflow\n")
    print(f"  {dim}agent endpoint{reset}  {server_url} (embedded dev server, offline)\n")
    print(f"  {bold}{'task':<14}{'map':>4}  {'answer':<70}{'prompt':>7}{'compl.':>7}{'total':>7}{reset}")
    totals = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for key in sorted(usage):
        counts = usage[key]
        for name in totals:
            totals[name] += int(counts.get(name, 0))
        task, index = key
        numbers = "".join(f"{counts.get(name, 0):>7}" for name in totals)
        print(f"  {task:<14}{'' if index < 0 else index:>4}  {_clip(answers.get(key, ''), 68):<70}{numbers}")
    print(f"  {'':<88}{'─' * 21}")
    print(
        f"  {bold}{'token usage':<88}{totals['prompt_tokens']:>7}{totals['completion_tokens']:>7}"
        f"{totals['total_tokens']:>7}{reset}\n"
    )
    for task, index, key, value in rows:
        if key == "return_value" and (task, index) not in usage:
            print(f"  {dim}{task} returned{reset} {_clip(json.dumps(value, default=str), 100)}")
    for path in sorted(OUTPUT.glob("*")) if OUTPUT.is_dir() else ():
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
        print(f"\n  {bold}{_relative(path)}{reset}  ({len(lines)} lines, kept)")
        for line in lines[:5]:
            print(f"    {_clip(line, 110)}")
    print()


def _relative(value: object) -> str:
    """Paths under the checkout as ``demo-output/...``, so what is printed can be opened from there."""
    text = str(value)
    return text[len(str(ROOT)) + 1 :] if text.startswith(str(ROOT) + os.sep) else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dag", default=DEFAULT_DAG, help="example DAG to run (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary AIRFLOW_HOME")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="agentchat-demo-"))
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AGENTCHAT_EXAMPLE_OUTPUT_DIR": str(OUTPUT),
        }
    )
    os.environ.update(env)  # so this process reads the same metadata DB afterwards
    shutil.rmtree(OUTPUT, ignore_errors=True)  # only this run's files, so none is mistaken for its output
    OUTPUT.mkdir()

    from airflow_agentchat.devserver import DevServer

    print("Preparing a throw-away Airflow (metadata DB in a temp folder) and the dev agent server…", flush=True)
    with DevServer() as server:
        migrated = _airflow(["db", "migrate"], env)
        if migrated.returncode:
            print(migrated.stdout[-3000:], migrated.stderr[-3000:], sep="\n")
            return migrated.returncode
        env["AIRFLOW_CONN_AGENTCHAT_DEFAULT"] = json.dumps({"conn_type": "agentchat", "host": server.url})
        print(f"Running `airflow dags test {args.dag}`…", flush=True)
        started = time.perf_counter()
        result = _airflow(["dags", "test", args.dag], env)
        elapsed = time.perf_counter() - started
        if result.returncode:
            print(textwrap.indent((result.stdout + result.stderr)[-6000:], "  | "))
            print(f"`airflow dags test {args.dag}` failed (exit {result.returncode}).")
            return result.returncode
        _report(args.dag, elapsed, server.url)
    if args.keep:
        print(f'Kept {home}: AIRFLOW_HOME="{home}" airflow tasks states-for-dag-run / dags list-runs work there.')
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
