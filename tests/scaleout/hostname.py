"""``[core] hostname_callable`` for the scale-out environment: two workers on one machine, two names.

Airflow records the worker's hostname on each task instance; on one machine both Celery workers would report
the same name. The harness gives each process ``AGENTCHAT_SCALEOUT_HOST`` and points ``hostname_callable`` here.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("AGENTCHAT_SCALEOUT_HOST") or socket.getfqdn()
