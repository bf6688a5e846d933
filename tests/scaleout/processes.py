"""Crashing a component on purpose: SIGKILL to its whole process tree at once, as a lost machine would.

Airflow's task runner moves every task into a process group of its own, so killing a Celery worker's group
leaves its tasks running (and heartbeating). The tree is read *first* (once the parent dies its children are
re-parented and can no longer be found from it), then every process and every process group in it is killed.
"""

from __future__ import annotations

import os
import signal

import psutil

from dev.ui import Component


def crash(component: Component) -> list[int]:
    """SIGKILL the component, its descendants and their process groups; return the pids killed."""
    if component.proc is None:
        return []
    try:
        root = psutil.Process(component.proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    groups = set()
    for proc in procs:
        try:
            groups.add(os.getpgid(proc.pid))
        except ProcessLookupError:
            pass
    groups.discard(os.getpgrp())  # never the group of the process doing the killing
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    psutil.wait_procs(procs, timeout=10)
    component.proc.wait(10)
    return [proc.pid for proc in procs]
