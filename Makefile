# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON_VERSION ?= 3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")

.PHONY: venv test lint typecheck demo ui bench clean

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

# The lock file pins every package; --frozen refuses to run when pyproject and the lock disagree.
$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	"$(UV)" sync --frozen --python $(PYTHON_VERSION)
	touch $@

venv: $(VENV)/.synced

lint: venv
	$(VENV)/bin/ruff check airflow_agentchat tests dags benchmarks
	$(VENV)/bin/ruff format --check airflow_agentchat tests dags benchmarks

# mypy settings live in pyproject.toml ([tool.mypy]).
typecheck: venv
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: venv
	$(PY) -m airflow_agentchat.devserver.demo

ui: venv
	$(PY) -m airflow_agentchat.devserver.ui_launcher

bench: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
