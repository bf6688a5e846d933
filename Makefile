# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON_VERSION ?= 3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")

.PHONY: venv test lint typecheck demo ui bench scale-demo test-compat clean

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

# The lock file pins every package; --frozen refuses to run when pyproject and the lock disagree.
$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	"$(UV)" sync --frozen --python $(PYTHON_VERSION)
	touch $@

venv: $(VENV)/.synced

lint: venv
	$(VENV)/bin/ruff check airflow_agentchat tests dags benchmarks dev
	$(VENV)/bin/ruff format --check airflow_agentchat tests dags benchmarks dev

# mypy settings live in pyproject.toml ([tool.mypy]).
typecheck: venv
	$(VENV)/bin/mypy

# Three pytest runs. First, alone, the tests marked serial: they judge pacing or a limit's use by arrival times, which
# other work on the machine would skew. The shared-limit tests among them fork sender processes; a fork of a process
# that has run other tests inherits its threads' held locks and hangs, so tests/hooks/test_limits.py runs on its own.
# Then the rest on TEST_WORKERS xdist workers, a whole file per worker (a file's module-wide servers and Airflow
# runs start once; tests/conftest.py puts the long integration files first); most tests wait
# on subprocesses and sockets, so more workers than cores pay off.
TEST_WORKERS ?= 4
test: lint typecheck
	$(VENV)/bin/pytest $(PYTEST_ARGS) tests/hooks/test_limits.py
	$(VENV)/bin/pytest $(PYTEST_ARGS) -m serial --ignore=tests/hooks/test_limits.py
	$(VENV)/bin/pytest $(PYTEST_ARGS) -m "not serial" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --ignore=tests/hooks/test_limits.py

QUIET_VENV = @out=$$($(MAKE) --no-print-directory venv 2>&1) || { echo "$$out"; exit 1; }

# The checkout-only helpers live in dev/ (not in the wheel). `make demo` shows uv's output only when it fails.
demo:
	$(QUIET_VENV)
	@$(PY) -m dev.demo $(ARGS)

# A small working Airflow (api-server, scheduler, dag-processor, triggerer, dev agent); options: make ui ARGS='--port 8081'
ui:
	$(QUIET_VENV)
	@$(PY) -m dev.ui $(ARGS)

bench: venv
	$(PY) benchmarks/run_all.py

# The sharded batch example on two Celery workers with S3 storage, all on this machine (docs/scale-out.md).
scale-demo: venv
	$(PY) dev/scale_demo.py $(SCALE_DEMO_ARGS)

# Every supported Airflow x Python pair (dev/compat-matrix.txt), each in its own venv under .compat/:
# the example DAGs under `airflow dags test`, the provider list, imports, unit tests. One line: PAIRS=3.0
test-compat: venv
	PATH="$(dir $(UV)):$$PATH" $(PY) -m dev.compat_matrix --pairs $(PAIRS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .compat
