"""A one-machine scale-out environment (Celery workers, S3 on moto, the dev agent) for tests and ``make scale-demo``.

See :mod:`scaleout.env`; ``docs/scale-out.md`` describes what runs and how it maps to a real cluster.
"""

from __future__ import annotations

from scaleout.env import BUCKET, DAG_ID, STORAGE_CONN_ID, ScaleOutEnv

__all__ = ["BUCKET", "DAG_ID", "STORAGE_CONN_ID", "ScaleOutEnv"]
