"""The one place that knows Airflow versions: imports that moved between 3.0 and 3.3, and feature checks.

Every other module imports Airflow names that differ between lines from here, and asks here whether a feature
exists, so supporting a new Airflow line (or dropping an old one) is a change to this file only.

What moved where (checked on 3.0.6, 3.1.8, 3.2.2 and 3.3.2):

==============================  ==================================  ==========================================
name                            3.0 / 3.1                           newer
==============================  ==================================  ==========================================
``BaseHook``                    ``airflow.hooks.base`` (3.0)        ``airflow.sdk`` (3.1+)
``AirflowException``            ``airflow.exceptions`` (3.0)        ``airflow.sdk.exceptions`` (3.1+)
``AirflowNotFoundException``    ``airflow.exceptions``              ``airflow.sdk.exceptions`` (3.2+)
``conf``                        ``airflow.configuration``           ``airflow.sdk.configuration`` (3.2+)
metrics (``incr``/``timing``)   ``airflow.stats.Stats``             ``airflow.sdk.observability.stats.Stats``
                                                                    (3.2), the module itself (3.3+)
``BranchMixIn``                 ``airflow.providers.standard``      ``airflow.sdk.bases.branch`` (3.2+)
                                ``.operators.branch``
``context_merge``               ``airflow.utils.context`` (3.0)     ``airflow.sdk.definitions.context`` (3.1+)
``determine_kwargs``            ``airflow.utils.operator_helpers``  ``airflow.sdk.bases.decorator`` (3.2+)
``utcnow``                      ``airflow.utils.timezone`` (3.0)    ``airflow.sdk.timezone`` (3.1+)
==============================  ==================================  ==========================================

Behaviour that differs: a file opened with ``ObjectStoragePath.open`` cannot be iterated on 3.0 (its lineage
wrapper has no ``__iter__``; 3.1 added it), so line loops use :func:`file_lines`.

Features that exist only on newer lines:

- human review of an answer (``require_approval``, Airflow's human-in-the-loop): 3.1+ (:data:`HAS_HITL`);
  on 3.3 the task waits with ``TaskAwaitingInput``, on 3.1 and 3.2 it defers to the standard provider's
  ``HITLTrigger`` (:data:`HAS_AWAITING_INPUT`);
- the task state store (``context["task_state_store"]``, ``NEVER_EXPIRE``): 3.3+ (:data:`HAS_TASK_STATE_STORE`).
  It is what lets a retried tool loop resume where the failed try stopped; without it a retry starts the
  conversation over, which :func:`warn_no_task_state_store` says at parse time and in the task log.

Names needed when a DAG file is parsed (base classes, ``context_merge``) are imported at module import; the
ones needed only while a task runs are functions that import on first call, so parsing pays for none of them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import airflow

if TYPE_CHECKING:
    from airflow.sdk.exceptions import TaskAwaitingInput

log = logging.getLogger(__name__)


def _version(text: str) -> tuple[int, int, int]:
    """``(major, minor, patch)`` of a version string such as ``3.2.0``, ``3.1.0rc1`` or ``3.3.0.dev0``."""
    parts = [int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


#: The installed Airflow as ``(major, minor, patch)``.
AIRFLOW_VERSION: tuple[int, int, int] = _version(airflow.__version__)
AIRFLOW_V_3_1_PLUS = AIRFLOW_VERSION >= (3, 1, 0)
AIRFLOW_V_3_2_PLUS = AIRFLOW_VERSION >= (3, 2, 0)
AIRFLOW_V_3_3_PLUS = AIRFLOW_VERSION >= (3, 3, 0)

#: Human-in-the-loop review (``require_approval=True``).
HAS_HITL = AIRFLOW_V_3_1_PLUS
#: A task can stop and wait for input without a trigger (``TaskAwaitingInput``).
HAS_AWAITING_INPUT = AIRFLOW_V_3_3_PLUS
#: ``context["task_state_store"]``: state kept across a task's retries.
HAS_TASK_STATE_STORE = AIRFLOW_V_3_3_PLUS

#: Why ``require_approval`` is refused on this Airflow (None when it is supported).
HITL_UNSUPPORTED = (
    None
    if HAS_HITL
    else f"require_approval=True needs Airflow >= 3.1 (human-in-the-loop); this is Airflow {airflow.__version__}"
)

#: What a retry loses without the task state store (None when the store exists).
NO_TASK_STATE_STORE = (
    None
    if HAS_TASK_STATE_STORE
    else (
        f"Airflow {airflow.__version__} has no task state store (Airflow >= 3.3): a retry of this task starts "
        "the conversation over, so tool calls made by a failed try run again and its tokens are paid again"
    )
)

# Mypy reads the newest line (the `TYPE_CHECKING` branch); the `else` branches are what older lines run.
if TYPE_CHECKING or AIRFLOW_V_3_1_PLUS:
    from airflow.sdk.definitions.context import context_merge
    from airflow.sdk.exceptions import AirflowException
else:
    from airflow.exceptions import AirflowException
    from airflow.utils.context import context_merge

if TYPE_CHECKING:
    from airflow.sdk import BaseHook
    from airflow.sdk.bases.branch import BranchMixIn


def _base_hook() -> Any:
    if TYPE_CHECKING or AIRFLOW_V_3_1_PLUS:
        from airflow.sdk import BaseHook as hook
    else:
        from airflow.hooks.base import BaseHook as hook
    return hook


def _branch_mixin() -> Any:
    if TYPE_CHECKING or AIRFLOW_V_3_2_PLUS:
        from airflow.sdk.bases.branch import BranchMixIn as mixin
    else:
        from airflow.providers.standard.operators.branch import BranchMixIn as mixin
    return mixin


_LAZY = {"BaseHook": _base_hook, "BranchMixIn": _branch_mixin}


def __getattr__(name: str) -> Any:
    """``BaseHook`` and ``BranchMixIn`` on first use: ``airflow.sdk`` loads neither, and most DAG files need neither."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = _LAZY[name]()
    return value


__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "HAS_AWAITING_INPUT",
    "HAS_HITL",
    "HAS_TASK_STATE_STORE",
    "HITL_UNSUPPORTED",
    "NO_TASK_STATE_STORE",
    "AirflowException",
    "BaseHook",
    "BranchMixIn",
    "airflow_not_found_exception",
    "conf",
    "context_merge",
    "determine_kwargs",
    "file_lines",
    "never_expire",
    "stats",
    "task_awaiting_input",
    "utcnow",
    "warn_no_task_state_store",
]


def conf() -> Any:
    """Airflow's configuration (the task side's on 3.2+, the core one before)."""
    if TYPE_CHECKING or AIRFLOW_V_3_2_PLUS:
        from airflow.sdk.configuration import conf as _conf
    else:
        from airflow.configuration import conf as _conf
    return _conf


def stats() -> Any:
    """The metrics client: something with ``incr(name, count, *, tags)`` and ``timing(name, dt, *, tags)``."""
    if TYPE_CHECKING or AIRFLOW_V_3_3_PLUS:
        from airflow.sdk.observability import stats as _stats

        return _stats
    if AIRFLOW_V_3_2_PLUS:
        from airflow.sdk.observability.stats import Stats as _sdk_stats

        return _sdk_stats
    from airflow.stats import Stats

    return Stats


def airflow_not_found_exception() -> type[Exception]:
    """The class Airflow raises for an unknown connection id."""
    if TYPE_CHECKING or AIRFLOW_V_3_2_PLUS:
        from airflow.sdk.exceptions import AirflowNotFoundException
    else:
        from airflow.exceptions import AirflowNotFoundException
    return AirflowNotFoundException


def determine_kwargs(callable_: Any, args: Any, context: Any) -> Any:
    """The keyword arguments of ``callable_`` that ``context`` supplies (as ``@task`` does)."""
    if TYPE_CHECKING or AIRFLOW_V_3_2_PLUS:
        from airflow.sdk.bases.decorator import determine_kwargs as _determine
    else:
        from airflow.utils.operator_helpers import determine_kwargs as _determine
    return _determine(callable_, args, context)


def utcnow() -> Any:
    """Now, as an aware UTC datetime."""
    if TYPE_CHECKING or AIRFLOW_V_3_1_PLUS:
        from airflow.sdk.timezone import utcnow as _utcnow
    else:
        from airflow.utils.timezone import utcnow as _utcnow
    return _utcnow()


def file_lines(handle: Any) -> Iterator[Any]:
    """The lines of a file ``ObjectStoragePath.open`` returned (Airflow 3.0's wrapper is not iterable)."""
    if AIRFLOW_V_3_1_PLUS:
        yield from handle
        return
    while line := handle.readline():
        yield line


def never_expire() -> Any:
    """The task state store's "keep until the task succeeds" retention (3.3+ only, like the store itself)."""
    from airflow.sdk.execution_time.context import NEVER_EXPIRE

    return NEVER_EXPIRE


def task_awaiting_input() -> type[TaskAwaitingInput]:
    """The exception that parks a task for human input without a trigger (3.3+, see :data:`HAS_AWAITING_INPUT`)."""
    from airflow.sdk.exceptions import TaskAwaitingInput as _TaskAwaitingInput

    return _TaskAwaitingInput


def warn_no_task_state_store(what: str, logger: Any = None) -> bool:
    """Warn (on ``logger``, else this module's) that ``what`` loses its retry guarantee on this Airflow.

    Returns whether a warning was given, i.e. whether this Airflow lacks the task state store.
    """
    if NO_TASK_STATE_STORE is None:
        return False
    (logger or log).warning("%s: %s", what, NO_TASK_STATE_STORE)
    return True


def check_features(task_id: str, *, review: bool, keeps_state: bool, logger: Any = None) -> None:
    """At parse time: refuse a review this Airflow cannot hold; warn when a retry would start over."""
    if review and HITL_UNSUPPORTED:
        raise ValueError(HITL_UNSUPPORTED)
    if keeps_state:
        warn_no_task_state_store(f"Task {task_id!r} (tools, review or a token budget)", logger)
