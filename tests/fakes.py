"""The stand-ins shared by in-process tests, kept here so each is written once.

The DAG tests run real Airflow; these replace only what an in-process ``execute`` cannot reach: the task
instance, the task state store, and a fresh interpreter for seeing what an import loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

#: The smallest files whose bytes say PNG and JPEG: the images the media tests attach and store in S3.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))
JPEG = b"\xff\xd8\xff\xe0" + b"JFIF" + bytes(32)
#: Where the ``storage_conn`` fixture keeps them (``claims/dent.jpg``, and ``claims/big.png`` over 5,000 bytes).
BUCKET = "agentchat-media"
STORAGE_CONN = "media_s3"


class FakeTI:
    """Stands in for ``context["ti"]`` of an in-process ``execute``.

    Every XCom push is checked to be JSON (as XCom needs) and kept in ``xcom``. The identity attributes default
    to None, which is what ``getattr(ti, key, None)`` sees on a task instance without them. ``mapped`` makes it
    one of that many mapped instances: ``get_ti_count`` answers it and records each query in ``asked``.
    """

    def __init__(
        self,
        dag_id: str | None = None,
        task_id: str | None = None,
        run_id: str | None = None,
        map_index: int | None = None,
        try_number: int | None = None,
        *,
        mapped: int | None = None,
    ) -> None:
        self.dag_id, self.task_id, self.run_id = dag_id, task_id, run_id
        self.map_index, self.try_number, self.mapped = map_index, try_number, mapped
        self.xcom: dict[str, Any] = {}
        self.asked: list[dict[str, Any]] = []

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)
        self.xcom[key] = value

    def get_ti_count(self, **query: Any) -> int:
        if self.mapped is None:
            raise AssertionError(f"get_ti_count({query}) asked of a task instance that is not mapped")
        self.asked.append(query)
        return self.mapped


class FakeStateStore:
    """Stands in for ``context["task_state_store"]`` (get / set / delete), which survives tries unlike XCom.

    Values are kept as JSON text, so a value the real store could not keep fails here too, and ``get`` returns a
    fresh copy. ``writes`` counts the sets, ``retention`` keeps each key's last retention, and ``fail`` names the
    calls ("get", "set", "delete") that raise, as a store that is down does.
    """

    def __init__(self, fail: str = "") -> None:
        self.data: dict[str, str] = {}
        self.retention: dict[str, Any] = {}
        self.writes = 0
        self.fail = fail

    @property
    def values(self) -> dict[str, Any]:
        return {key: json.loads(text) for key, text in self.data.items()}

    def _check(self, call: str) -> None:
        if call in self.fail:
            raise RuntimeError("store down")

    def get(self, key: str, default: Any = None) -> Any:
        self._check("get")
        return json.loads(self.data[key]) if key in self.data else default

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self._check("set")
        self.data[key], self.retention[key] = json.dumps(value), retention
        self.writes += 1

    def delete(self, key: str) -> None:
        self._check("delete")
        self.data.pop(key, None)


@dataclass
class Imported:
    """What a fresh interpreter holds after an import: every module, the ones the import added, and the last line
    the code printed. How long the import took is make bench's to measure (benchmarks/import_cost.py), not a test's."""

    loaded: list[str]
    new: list[str]
    printed: str

    @staticmethod
    def matching(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
        return sorted(m for m in modules if m.startswith(prefixes))


def import_in_fresh_python(code: str, *, after: str = "import airflow.sdk", then: str = "") -> Imported:
    """Run ``after`` (what DAG parsing has loaded anyway), then ``code``, then ``then``, in a new process.

    ``new`` is what ``code`` and ``then`` added to ``sys.modules``.
    """
    script = "\n".join(
        [
            "import sys",
            after,
            "before = set(sys.modules)",
            code,
            then,
            "loaded = sorted(sys.modules)",
            "import json",
            "print(json.dumps({'loaded': loaded, 'new': sorted(set(loaded) - before)}))",
        ]
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    *printed, last = out.strip().splitlines()
    return Imported(**json.loads(last), printed=printed[-1] if printed else "")
