"""The compatibility module on whichever Airflow is installed (``make test-compat`` runs this on every line)."""

from __future__ import annotations

import ast
import logging
import re
from datetime import timezone
from pathlib import Path

import airflow
import pytest

from airflow_agentchat import compat

PACKAGE = Path(__file__).resolve().parent.parent / "airflow_agentchat"
#: Airflow modules (or module:name) whose home differs between 3.0 and 3.3: only compat.py may import them.
MOVED = (
    "airflow.sdk.configuration",
    "airflow.configuration",
    "airflow.sdk.observability",
    "airflow.stats",
    "airflow.sdk.bases.branch",
    "airflow.sdk.definitions.context",
    "airflow.utils.context",
    "airflow.sdk.timezone",
    "airflow.utils.timezone",
    "airflow.exceptions",
    "airflow.sdk.exceptions",
    "airflow.providers.standard.version_compat",
    "airflow.sdk.execution_time.context",
    "airflow.hooks.base",
    "airflow.sdk:BaseHook",
    "airflow.sdk.bases.decorator:determine_kwargs",
    "airflow.utils.operator_helpers",
)
#: Server-side modules the UI plugin runs in (the API server), not moved between 3.0 and 3.3.
ALLOWED = {("plugins/agent_chat.py", "airflow.configuration"), ("plugins/limits.py", "airflow.configuration")}


def _moved_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}:{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [name for name in names if name in MOVED]
    return found


def test_only_compat_imports_what_moved_between_airflow_lines():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "compat.py":
            continue
        offenders += [f"{relative}: {name}" for name in _moved_imports(path) if (relative, name) not in ALLOWED]
    assert offenders == []


def test_version_flags_follow_the_installed_airflow():
    major, minor = (int(part) for part in re.findall(r"\d+", airflow.__version__)[:2])
    assert compat.AIRFLOW_VERSION[:2] == (major, minor)
    assert compat.HAS_HITL is ((major, minor) >= (3, 1))
    assert compat.HAS_TASK_STATE_STORE is ((major, minor) >= (3, 3))
    assert (compat.HITL_UNSUPPORTED is None) is compat.HAS_HITL
    assert (compat.NO_TASK_STATE_STORE is None) is compat.HAS_TASK_STATE_STORE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.0.6", (3, 0, 6)),
        ("3.1.0rc1", (3, 1, 0)),
        ("3.3.0.dev0", (3, 3, 0)),
        ("3.2", (3, 2, 0)),
        ("3.2.1+x", (3, 2, 1)),
    ],
)
def test_version_parsing(text, expected):
    assert compat._version(text) == expected


def test_every_moved_name_resolves_on_this_airflow():
    from airflow_agentchat.compat import BaseHook, BranchMixIn

    assert hasattr(BaseHook, "get_connection")
    assert hasattr(BranchMixIn, "do_branch")
    assert issubclass(compat.AirflowException, Exception)
    assert compat.conf().getboolean("core", "load_examples", fallback=True) is False  # conftest sets it
    stats = compat.stats()
    assert callable(stats.incr) and callable(stats.timing)
    assert compat.utcnow().tzinfo is not None and compat.utcnow().utcoffset() == timezone.utc.utcoffset(None)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        compat.Nope  # noqa: B018


def test_context_merge_and_determine_kwargs_work_as_task_does():
    context: dict = {"ds": "2026-01-01"}
    compat.context_merge(context, {"extra": 1})
    assert context == {"ds": "2026-01-01", "extra": 1}

    def fn(ds, extra):
        return ds, extra

    assert compat.determine_kwargs(fn, (), context) == {"ds": "2026-01-01", "extra": 1}


def test_an_unknown_connection_raises_the_class_compat_names(monkeypatch):
    from airflow_agentchat.compat import BaseHook

    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_CONN_HERE", raising=False)
    with pytest.raises(compat.airflow_not_found_exception()):
        BaseHook.get_connection("no_such_conn_here")


def test_our_errors_are_airflow_exceptions():
    from airflow_agentchat.exceptions import AgentChatError

    assert issubclass(AgentChatError, compat.AirflowException)


def _operator(**kwargs):
    from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

    return AgentChatCompletionOperator(task_id="t", prompt="hi", **kwargs)


@pytest.mark.skipif(compat.HAS_HITL, reason="this Airflow has human-in-the-loop")
def test_require_approval_is_refused_when_the_dag_is_parsed_without_hitl():
    with pytest.raises(ValueError, match=r"require_approval=True needs Airflow >= 3\.1"):
        _operator(require_approval=True)


@pytest.mark.skipif(not compat.HAS_HITL, reason="human-in-the-loop needs Airflow >= 3.1")
def test_require_approval_is_accepted_with_hitl():
    assert _operator(require_approval=True).require_approval is True


def _warnings(caplog, capfd) -> list[str]:
    """The "no task state store" warnings, from stdlib logging or from Airflow's structlog (3.1+) output."""
    out, err = capfd.readouterr()
    lines = [r.getMessage() for r in caplog.records] + (out + err).splitlines()
    return [line for line in lines if "has no task state store" in line]


def _tool(city: str) -> str:
    """A tool."""
    return city


@pytest.mark.parametrize("kwargs", [{"tools": [_tool]}, {"max_total_tokens": 1000}], ids=["tools", "budget"])
def test_a_retry_guarantee_this_airflow_lacks_is_said_when_the_dag_is_parsed(caplog, capfd, kwargs):
    caplog.set_level(logging.WARNING)
    _operator(**kwargs)
    warned = _warnings(caplog, capfd)
    if compat.HAS_TASK_STATE_STORE:
        assert warned == []
    else:
        assert warned  # once per log destination (3.0 logs to both logging and the console)
        assert all("a retry of this task starts the conversation over" in line for line in warned)


def test_a_plain_task_is_parsed_without_a_warning(caplog, capfd):
    caplog.set_level(logging.WARNING)
    _operator()
    assert _warnings(caplog, capfd) == []


def test_the_task_log_says_a_retry_starts_over_without_a_store(caplog):
    from airflow_agentchat.operators.task_state import RoundState

    log = logging.getLogger("test.task")
    caplog.set_level(logging.WARNING)
    RoundState.load({}, [{"role": "user", "content": "hi"}], {}, log, enabled=True)
    warned = [r.getMessage() for r in caplog.records if "task state store" in r.getMessage()]
    assert len(warned) == (0 if compat.HAS_TASK_STATE_STORE else 1)


def test_file_lines_reads_a_file_object_storage_opened(tmp_path):
    from airflow.sdk import ObjectStoragePath

    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"a": 1}\n\n{"b": 2}')
    with ObjectStoragePath(f"file://{source}").open("rb") as handle:
        assert list(compat.file_lines(handle)) == [b'{"a": 1}\n', b"\n", b'{"b": 2}']
