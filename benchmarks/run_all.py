"""``make bench``: run every benchmark in this folder; each writes its own section of RESULTS.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "import_cost.py",
    "hook_overhead.py",
    "batch_throughput.py",
    "output_schema_cost.py",
    "content_parts_cost.py",
    "response_cache.py",
    "shared_limit.py",
    "scale_out.py",
]


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        if not (HERE / name).exists():
            continue
        print(f"\n=== {name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)]).returncode:
            failed.append(name)
    print(f"\nResults: {HERE / 'RESULTS.md'}" + (f"\nOver budget: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
