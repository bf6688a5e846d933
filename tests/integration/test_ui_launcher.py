"""``make ui``'s launcher refuses a busy port in one line that names the port and the flag, before starting anything."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flag", ["--port", "--devserver-port"])
def test_busy_port_is_one_line_naming_the_port_and_the_flag(tmp_path: Path, flag: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["--port", "0", "--devserver-port", "0", "--home", str(tmp_path / "home")]
        args[args.index(flag) + 1] = str(port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        result = subprocess.run(
            [sys.executable, "-m", "dev.ui", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port} " in lines[0] and f"ARGS='{flag} N'" in lines[0]
    assert not (tmp_path / "home").exists()  # nothing was prepared
