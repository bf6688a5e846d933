"""What the whole test session shares: a throw-away AIRFLOW_HOME with its dags folder, and the canary key.

Airflow reads its configuration at import, so conftest.py imports this module before any test imports Airflow.
Test modules import these names from here (never from conftest, which pytest imports under a name of its own).
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="agentchat-airflow-home-"))
# One dags folder holding the example DAGs and the tests' own DAGs (links, so edits show up at once).
DAGS_FOLDER = AIRFLOW_HOME / "dags"
DAGS_FOLDER.mkdir()
for source in (ROOT / "dags", ROOT / "tests" / "dags"):
    for entry in source.iterdir() if source.is_dir() else ():
        if entry.name != "__pycache__" and not (DAGS_FOLDER / entry.name).exists():
            (DAGS_FOLDER / entry.name).symlink_to(entry)
os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)

#: A key that must never show up in logs, XCom, exception text or UI responses.
CANARY_KEY = "sk-canary-7f3a9c-DO-NOT-LEAK"
#: The key the dev server of tests/devserver/ requires, so every call there exercises auth.
DEVSERVER_KEY = "devserver-test-key"


def make_bucket(url: str, bucket: str) -> str:
    """Create ``bucket`` on the S3 server at ``url`` (the session's ``moto_url``); return ``url``."""
    urllib.request.urlopen(urllib.request.Request(f"{url}/{bucket}", method="PUT"), timeout=10).close()
    return url


def stored_entries(folder: Path | str) -> dict[str, bytes]:
    """The entries of the local response cache in ``folder``: key -> the bytes its newest index line points at."""
    from airflow_agentchat.cache_packs import LocalPacks

    return dict(LocalPacks(str(folder)).entries())


def rewrite_entry(folder: Path | str, key: str, data: bytes) -> None:
    """Store ``data`` as the newest entry of ``key`` in the local cache in ``folder``, as a writer would."""
    from airflow_agentchat.cache_packs import LocalPacks

    LocalPacks(str(folder)).write([(key, data)])
