"""The tests mirror the package: every module of airflow_agentchat has its test module at the same place.

``airflow_agentchat/hooks/retry.py`` is tested in ``tests/hooks/test_retry.py``, ``airflow_agentchat/spend.py``
in ``tests/test_spend.py`` (a leading underscore is dropped: ``models/_common.py`` -> ``models/test_common.py``).
A package's ``__init__.py`` holds its exports, tested by the package's test folder. Runs of real Airflow
processes (``airflow dags test``, the api-server, a browser, Celery workers) are in ``tests/integration/``.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "airflow_agentchat"

#: Modules without a test module of their own, each with where it is tested instead and why.
ELSEWHERE = {
    # Read by Airflow's ProvidersManager; its contents need Airflow to mean anything.
    "get_provider_info.py": "plugins/test_agent_chat.py",
    # The command line around DevServer: every DevServer starts it as a subprocess.
    "devserver/__main__.py": "devserver/test_app.py",
    # A person's decision needs the api-server, scheduler and triggerer of a real Airflow.
    "operators/approval.py": "integration/test_approval.py",
    # Routes mounted by a real api-server (auth, the UI's session), and the page in a real browser.
    "plugins/app.py": "integration/test_ui_api.py",
}


def expected_test(module: Path) -> Path:
    rel = module.relative_to(PACKAGE)
    if rel.name == "__init__.py":
        return TESTS / rel.parent
    return TESTS / rel.parent / f"test_{rel.name.lstrip('_')}"


def test_every_module_has_its_test_module():
    missing = []
    for module in sorted(PACKAGE.rglob("*.py")):
        rel = module.relative_to(PACKAGE).as_posix()
        target = TESTS / ELSEWHERE[rel] if rel in ELSEWHERE else expected_test(module)
        if not target.exists():
            missing.append(f"{rel} -> {target.relative_to(TESTS.parent)}")
    assert missing == [], "modules without a test module:\n" + "\n".join(missing)


def test_every_exception_names_a_module_that_exists_and_a_test_that_uses_it():
    for rel, test in ELSEWHERE.items():
        assert (PACKAGE / rel).exists(), f"{rel} is gone: drop it from ELSEWHERE"
        stem = Path(rel).stem.lstrip("_")
        text = (TESTS / test).read_text()
        assert stem in text or Path(rel).parent.name in text, f"{test} does not mention {rel}"


def test_test_modules_sit_beside_a_module_or_in_integration():
    """A test folder mirrors a package folder; only integration/ (and support folders) stand outside it."""
    support = {"integration", "dags", "scaleout", "__pycache__"}
    for folder in (p for p in TESTS.iterdir() if p.is_dir() and p.name not in support):
        assert (PACKAGE / folder.name).is_dir(), f"tests/{folder.name}/ mirrors no package of airflow_agentchat"
