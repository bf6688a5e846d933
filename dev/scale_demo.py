"""``make scale-demo``: the sharded batch example on two Celery workers with S3 storage, on this machine.

Starts the scale-out environment of the tests (Redis, moto's S3 server, the dev agent, Airflow's api-server,
scheduler, dag-processor and Celery workers, all on 127.0.0.1), runs ``example_agentchat_batch`` once and prints
which worker ran each shard, the throughput and where the results are. ``--keep`` leaves everything running
(with the Airflow UI and its login printed) until Ctrl+C. See docs/scale-out.md.

    python dev/scale_demo.py [--items 2000] [--shards 4] [--workers 2] [--latency-ms 50] [--keep]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from scaleout import ScaleOutEnv  # noqa: E402
from scaleout.report import describe, run_example  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make scale-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (two task slots each)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the dev agent's latency per request")
    parser.add_argument("--keep", action="store_true", help="keep everything running until Ctrl+C")
    args = parser.parse_args(argv)

    home = ROOT / "tmp" / f"scale-demo-{time.strftime('%Y%m%dT%H%M%S')}"
    print(f"Starting the scale-out environment in {home} (a minute or two) ...", flush=True)
    env = ScaleOutEnv(workers=args.workers, latency_ms=args.latency_ms, home=home)
    try:
        env.start()
        assert env.api is not None and env.devserver is not None
        print(f"Airflow {env.api.url} (admin / {env.password}), agent {env.devserver.url}, S3 {env.s3_url}")
        print(f"Running example_agentchat_batch: {args.items} items in {args.shards} shards ...", flush=True)
        report = run_example(env, "demo", items=args.items, shards=args.shards)
        print(describe(report, env))
        print(f"Logs: {home / 'logs'}")
        if not args.keep:
            print("(moto keeps the bucket in memory: run with --keep to look at the results before they go)")
        if args.keep:
            print("Everything keeps running; press Ctrl+C to stop.", flush=True)
            while True:
                time.sleep(1)
        return 0 if report.state == "success" else 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("Stopping ...", flush=True)
        env.stop()


if __name__ == "__main__":
    raise SystemExit(main())
