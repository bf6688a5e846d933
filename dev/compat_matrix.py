"""``make test-compat``: the provider on every supported Airflow x Python pair, each in a fresh venv.

For every pair in ``dev/compat-matrix.txt`` (or those whose name starts with one of ``--pairs``):

1. a venv under ``.compat/<pair>/`` (git-ignored) with uv, reusing uv's cache; Airflow (and the pins that
   Airflow release needs) is installed first, then this checkout as a wheel, the way a user adds the provider
   to an existing Airflow, and the Airflow version is checked to be the same afterwards;
2. ``airflow db migrate`` in a fresh ``AIRFLOW_HOME``, the dev server (``agentchat-devserver``) on a free port
   and ``agentchat_default`` pointing at it;
3. ``airflow providers list`` shows the provider; every operator, decorator, trigger and the plugin import;
4. ``airflow dags test`` of every DAG in ``dags/``;
5. the unit tests listed in ``UNIT_TESTS`` (they need no service beyond local servers they start themselves).

Prints one line per pair (pass/fail, seconds) and exits non-zero when any pair fails. Logs of failed steps are
kept in ``.compat/<pair>/logs/``.

    python -m dev.compat_matrix [--pairs 3.0 3.3.2-py3.13] [--dags example_agentchat_support] [--no-unit] [--list]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ROOT / "dev" / "compat-matrix.txt"
WORK = ROOT / ".compat"
#: Unit tests run on every pair: no extra services, and what they check differs between Airflow lines.
UNIT_TESTS = [
    "tests/test_compat.py",
    "tests/test_layers.py",
    "tests/test_exceptions.py",
    "tests/test_streaming.py",
    "tests/test_usage.py",
    "tests/test_metrics.py",
    "tests/integration/test_metrics.py",
]
#: Run conf per example DAG: a review would wait for a person forever under ``airflow dags test``.
DAG_CONF = {"example_agentchat_support": {"require_approval": False}}
TEST_DEPS = ["pytest>=8", "pytest-timeout>=2.3", "statsd>=4"]
IMPORTS = """
import airflow.sdk
import airflow_agentchat.operators.agent_chat, airflow_agentchat.operators.batch, airflow_agentchat.operators.branch
import airflow_agentchat.decorators.agent_chat, airflow_agentchat.decorators.agent_chat_branch
import airflow_agentchat.triggers.agent_chat, airflow_agentchat.hooks.agent_chat
from airflow_agentchat.plugins.agent_chat import AgentChatPlugin
from airflow_agentchat.plugins.app import create_app
create_app()
print("imports ok")
"""


@dataclass
class Pair:
    name: str
    python: str
    requirements: list[str]
    steps: list[tuple[str, bool, float]] = field(default_factory=list)

    @property
    def airflow(self) -> str:
        return next(r.split("==", 1)[1] for r in self.requirements if r.startswith("apache-airflow=="))


def read_matrix() -> list[Pair]:
    pairs = []
    for line in MATRIX.read_text("utf-8").splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            pairs.append(Pair(words[0], words[1], words[2:]))
    return pairs


def _uv() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    return found


def _python(version: str) -> str:
    """A pyenv interpreter of that version when there is one, else the version for uv to find or fetch."""
    candidates = sorted((Path.home() / ".pyenv" / "versions").glob(f"{version}.*/bin/python"))
    return str(candidates[-1]) if candidates else version


class Runner:
    def __init__(self, pair: Pair, dags: list[str] | None = None, unit: bool = True) -> None:
        self.pair = pair
        self.dags = dags or []
        self.unit = unit
        self.dir = WORK / pair.name
        self.venv = self.dir / "venv"
        self.logs = self.dir / "logs"
        self.bin = self.venv / "bin"

    def step(self, label: str, args: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> bool:
        started = time.perf_counter()
        # A session of its own, so a timeout or Ctrl+C stops what the step started too (pytest's servers, tasks).
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            output, _ = proc.communicate(timeout=timeout)
            ok = proc.returncode == 0
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            ok, output = False, f"timed out after {timeout} s\n{output}"
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        elapsed = time.perf_counter() - started
        self.pair.steps.append((label, ok, elapsed))
        print(f"  [{self.pair.name}] {'ok  ' if ok else 'FAIL'} {label} ({elapsed:.0f} s)", flush=True)
        if not ok:
            self.logs.mkdir(parents=True, exist_ok=True)
            path = self.logs / (label.replace(" ", "_").replace("/", "_") + ".log")
            path.write_text(output, "utf-8")
            tail = "\n".join(output.strip().splitlines()[-25:])
            print("    " + tail.replace("\n", "\n    ") + f"\n    (full log: {path.relative_to(ROOT)})", flush=True)
        return ok

    def build(self) -> bool:
        uv = _uv()
        spec = json.dumps([self.pair.python, *self.pair.requirements])
        stamp = self.venv / ".pair"
        if not (stamp.exists() and stamp.read_text() == spec):
            shutil.rmtree(self.venv, ignore_errors=True)
            if not self.step("venv", [uv, "venv", "-q", "--python", _python(self.pair.python), str(self.venv)]):
                return False
            install = [uv, "pip", "install", "-q", "--python", str(self.bin / "python"), *self.pair.requirements]
            if not self.step("install airflow", install):
                return False
            stamp.write_text(spec)
        # The provider goes in as users add it: into the existing Airflow, which must stay as it is.
        provider = [uv, "pip", "install", "-q", "--python", str(self.bin / "python"), "--reinstall-package"]
        provider += ["airflow-agentchat", str(ROOT), *TEST_DEPS]
        if not self.step("install provider", provider):
            return False
        check = f"import airflow; assert airflow.__version__ == {self.pair.airflow!r}, airflow.__version__"
        return self.step("airflow unchanged", [str(self.bin / "python"), "-c", check])

    def env(self, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHONPATH"))}
        env.update(
            {
                "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}",
                "VIRTUAL_ENV": str(self.venv),
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
                "AGENTCHAT_EXAMPLE_OUTPUT_DIR": str(self.dir / "output"),
            }
        )
        return env

    def run(self) -> bool:
        shutil.rmtree(self.logs, ignore_errors=True)
        if not self.build():
            return False
        home = self.dir / "airflow-home"
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(self.dir / "output", ignore_errors=True)
        home.mkdir(parents=True)
        (self.dir / "output").mkdir()
        env = self.env(home)
        airflow = str(self.bin / "airflow")
        ok = self.step("db migrate", [airflow, "db", "migrate"], env)
        server = subprocess.Popen(
            [str(self.bin / "agentchat-devserver"), "--port", "0"], stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            line = server.stdout.readline() if server.stdout else ""
            url = line.rsplit(" ", 1)[-1].strip()
            if not url.startswith("http"):
                self.pair.steps.append(("devserver", False, 0.0))
                print(f"  [{self.pair.name}] FAIL devserver: {line!r}", flush=True)
                return False
            env["AIRFLOW_CONN_AGENTCHAT_DEFAULT"] = json.dumps({"conn_type": "agentchat", "host": url})
            # example_agentchat_failover's primary: a loopback port nothing listens on, so it fails over.
            env["AIRFLOW_CONN_AGENTCHAT_PRIMARY"] = json.dumps(
                {"conn_type": "agentchat", "host": f"http://127.0.0.1:{_closed_port()}", "extra": {"max_retries": 0}}
            )
            ok &= self.step(
                "providers list",
                [str(self.bin / "python"), "-c", _PROVIDERS_CHECK, airflow],
                env,
            )
            ok &= self.step("imports", [str(self.bin / "python"), "-c", IMPORTS], env)
            for dag in sorted((ROOT / "dags").glob("example_*.py")):
                if self.dags and not any(dag.stem.startswith(d) for d in self.dags):
                    continue
                conf = ["-c", json.dumps(DAG_CONF[dag.stem])] if dag.stem in DAG_CONF else []
                ok &= self.step(f"dags test {dag.stem}", [airflow, "dags", "test", dag.stem, *conf], env)
        finally:
            server.terminate()
            server.wait(timeout=30)
        pytest = [str(self.bin / "pytest"), *UNIT_TESTS, "-q", "-p", "no:cacheprovider"]
        pytest += ["-o", "addopts=-ra --import-mode=importlib"]  # only the options the matrix's TEST_DEPS serve
        if self.unit:
            ok &= self.step("unit tests", pytest, env)
        return ok


_PROVIDERS_CHECK = """
import subprocess, sys
out = subprocess.run([sys.argv[1], "providers", "list"], capture_output=True, text=True)
print(out.stdout, out.stderr)
sys.exit(0 if out.returncode == 0 and "airflow-agentchat" in out.stdout else 1)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", nargs="*", default=[], help="pair names or prefixes (default: all)")
    parser.add_argument("--dags", nargs="*", default=[], help="only these example DAGs (ids or prefixes)")
    parser.add_argument("--no-unit", action="store_true", help="skip the unit tests")
    parser.add_argument("--list", action="store_true", help="print the pairs and exit")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl+C, so the step running and the dev server are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    wanted = [p for w in args.pairs for p in w.replace(",", " ").split()]
    pairs = [p for p in read_matrix() if not wanted or any(p.name.startswith(w) for w in wanted)]
    if args.list or not pairs:
        for pair in read_matrix():
            print(f"{pair.name:<16} Python {pair.python:<6} {' '.join(pair.requirements)}")
        return 0 if pairs else 2
    results = []
    for pair in pairs:
        print(f"== {pair.name}: Python {pair.python}, {' '.join(pair.requirements)}", flush=True)
        started = time.perf_counter()
        ok = Runner(pair, args.dags, unit=not args.no_unit).run()
        results.append((pair, ok, time.perf_counter() - started))
    print("\nAirflow x Python compatibility:")
    for pair, ok, elapsed in results:
        failed = [label for label, passed, _ in pair.steps if not passed]
        print(
            f"  {pair.name:<16} {'pass' if ok else 'FAIL'}  {elapsed:5.0f} s"
            + (f"  ({', '.join(failed)})" * bool(failed))
        )
    return 0 if all(ok for _, ok, _ in results) else 1


def _closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    raise SystemExit(main())
