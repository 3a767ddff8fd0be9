# Two commands do everything on a fresh clone:
#   make run   - create/reuse the environment, run the whole pipeline (recorded in dvc.lock), print the results
#   make test  - create/reuse the environment, run the test suite
# VENV=/path/to/env reuses an existing environment instead of ./.venv.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.r2kd-installed
export PYTHONUNBUFFERED := 1

.PHONY: run test test-fast faults snakemake env clean FORCE

env: $(STAMP) .r2kd/python

# The environment's Python, looked at on every make: ok | none (not made yet) | what is wrong with it.
# A .venv made by an older Python (or whose interpreter was uninstalled) is made again; a VENV=... of
# your own is never deleted: make stops with one line saying how to recover.
VENV_STATE := $(shell \
  if [ ! -e '$(VENV)' ]; then echo none; \
  elif [ ! -x '$(BIN)/python' ]; then echo has no working bin/python; \
  else v=$$('$(BIN)/python' -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
    case "$$v" in ('') echo has a broken bin/python;; (3.1[1-9]|3.[2-9][0-9]|[4-9].*) echo ok;; \
      (*) echo runs Python $$v;; esac; fi)
VENV_BAD := $(filter-out ok none,$(firstword $(VENV_STATE)))
NEEDS_311 = $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
  echo "r2kd: PYTHON=$(PYTHON) is missing or older than 3.11 (Snakemake 9 needs 3.11): rm -rf $(VENV) && make env PYTHON=python3.11" >&2; exit 1; }

# Reinstall only when the dependency spec changed or the environment lost what it needs.
$(STAMP): pyproject.toml constraints.txt $(if $(VENV_BAD),FORCE)
ifneq ($(VENV_BAD),)
ifeq ($(origin VENV),file)
	@echo "r2kd: $(VENV) $(VENV_STATE), r2kd needs Python >= 3.11: making it again with $(PYTHON)"
	@$(NEEDS_311)
	rm -rf $(VENV)
else
	@echo "r2kd: VENV=$(VENV) $(VENV_STATE), r2kd needs Python >= 3.11: rm -rf $(VENV) && make env VENV=$(VENV) PYTHON=python3.11" >&2; exit 1
endif
endif
	@test -x $(BIN)/python || { $(NEEDS_311) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[pipeline,export,test]'
	@touch $@

FORCE:

# The interpreter the pipeline's stage commands use (workflow/scripts/r2kd), venv activated or not.
.r2kd/python: $(STAMP)
	@mkdir -p .r2kd
	@echo "$(BIN)/python" > $@

# make run (workflow/scripts/make-run): DVC's `check` stage first (params.yaml validated before
# any compute), then `dvc repro` (one stage at a time, each its own process, recorded in dvc.lock),
# then the results table.
run: env
	workflow/scripts/make-run $(BIN)
	$(BIN)/r2kd show

# The same DAG under Snakemake, CORES jobs at a time (same commands, same files, same bytes).
CORES ?= $(shell nproc 2>/dev/null || echo 2)
snakemake: env
	$(BIN)/snakemake --cores $(CORES)

# The tests, one worker per core; a file's tests stay on one worker (they share its built checkouts).
TEST_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
test: env
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile

test-fast: env
	$(BIN)/python -m pytest -q -m "not slow"

faults: env
	$(BIN)/python -m pytest -q -m faults

clean:
	rm -rf .r2kd/state .r2kd/timing .snakemake logs runs reports data/prepared

# The pipeline on a real SLURM cluster: as root on a Debian/Ubuntu machine you may reconfigure (a CI
# runner, a container), install a one-node cluster (apt: slurm-wlm slurmdbd mariadb-server munge),
# start whatever of it is not running (workflow/scripts/slurm-local), then run tests/test_cluster.py's
# SLURM tests: the tiny pipeline through workflow/profiles/slurm, byte-identical to a local run, a job
# requeued mid-training that resumes, a failed job's log (docs/cluster.md). Elsewhere they skip.
.PHONY: slurm-test
slurm-test: env
	workflow/scripts/slurm-local install
	@$(BIN)/python -c "import snakemake_executor_plugin_slurm" 2>/dev/null || \
		$(BIN)/python -m pip install -q -c constraints.txt -e '.[slurm]'
	$(BIN)/python -m pytest -q -rs -s -m slurm tests/test_cluster.py
