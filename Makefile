# Two commands for a new machine: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
ALLOCATIONS ?= 100000
FLEET ?= 0

.PHONY: install browser pgbouncer demo up test test-fast lint stop bench bench-smoke bench-fleet bench-stall bench-seed bench-validation bench-probes bench-noise bench-locktime bench-locktrace

install:  ## uv (from PyPI) and the locked dependencies into .venv
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv \
		|| $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	@$(UV) sync --frozen --quiet --all-extras

demo: install  ## the whole rollout: seed staging and production, run the DAG on Airflow, list artifacts (FLEET=5: to 5 production databases in waves)
	@$(UV) run --frozen python -m rollout demo --allocations $(ALLOCATIONS) --fleet $(FLEET)

up: install  ## the demo databases and a local Airflow UI, to trigger and approve by hand
	@$(UV) run --frozen python -m rollout up --allocations $(ALLOCATIONS) --fleet $(FLEET)

# PARALLEL="-n auto" runs on every core (pytest-xdist; tests that share a fixture stay on one
# worker: tests/conftest.py, fixture_group). Not the default until three fresh-clone runs in a
# row pass with it (its one run had the down's lock-order deadlock, fixed since).
PARALLEL ?=

test: install lint browser pgbouncer  ## the whole suite, on embedded PostgreSQL 18 and on 127.0.0.1:5432 if it answers
	@$(UV) run --frozen pytest $(PARALLEL) --durations=15

test-fast: install  ## everything but the tests marked slow
	@$(UV) run --frozen pytest $(PARALLEL) -m "not slow"

# Debian's package $(1) where it can be installed (root, apt-get); else one line saying what
# is skipped ($(2)). Nothing is done where the command is there already.
define apt_install
	@command -v $(1) >/dev/null 2>&1 || test -x /usr/sbin/$(1) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q $(1) >/dev/null 2>&1 \
	      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $(1) >/dev/null 2>&1; } \
	      || echo "apt-get could not install $(1): $(2)"; \
	  else \
	    echo "no $(1), and installing it needs root and apt-get (apt-get install $(1)): $(2)"; \
	  fi; }
endef

browser:  ## Debian's Chromium for the browser test, where it can be installed (root, apt-get)
	$(call apt_install,chromium,the browser test is skipped; the rest runs)

pgbouncer:  ## Debian's PgBouncer for the pooler tests, where it can be installed (root, apt-get)
	$(call apt_install,pgbouncer,the pooler tests are skipped (they fail under CI=true))

lint: install
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .

stop: install  ## stop the embedded demo clusters
	@$(UV) run --frozen python -m rollout db stop

bench: install  ## every benchmark, on the embedded PostgreSQL 18 and on 127.0.0.1:5432, each figure beside its goal (about an hour)
	@$(UV) run --frozen python benchmarks/run.py

bench-smoke: install  ## the same at a small scale: it runs and reports (CI runs this through the test suite)
	@$(UV) run --frozen python benchmarks/run.py --smoke

bench-stall: install  ## writer stall under a booking workload, 1,000,000 allocations (BENCH_DSN for another server)
	@$(UV) run --frozen python benchmarks/stall.py --allocations 1000000 $(if $(BENCH_DSN),--dsn $(BENCH_DSN))

bench-fleet: install  ## the fleet DAG over 100 small production databases: overhead and peak memory
	@$(UV) run --frozen python benchmarks/fleet.py --targets 100 $(if $(BENCH_DSN),--dsn $(BENCH_DSN))

bench-seed: install  ## seed 1,000,000 allocations and measure its floor (bulk load + the exclusion constraint) beside it
	@$(UV) run --frozen python benchmarks/seed.py --allocations 1000000 $(if $(BENCH_DSN),--dsn $(BENCH_DSN))

bench-validation: install  ## time the post-migration validation on 1,000,000 allocations
	@$(UV) run --frozen python benchmarks/validation.py --allocations 1000000

bench-probes: install  ## the allocation query probes before and after the up, 1,000,000 allocations
	@$(UV) run --frozen python benchmarks/probes.py --allocations 1000000

bench-noise: install  ## the monitoring's regression rule, old and new, beside a CPU neighbour: false positives and dropped indexes found
	@$(UV) run --frozen python benchmarks/probe_noise.py --allocations 50000 --trials 20 --detections 10 $(if $(BENCH_DSN),--dsn $(BENCH_DSN))

bench-locktime: install  ## lock time at 100k and 1M allocations, and the prediction's error
	@$(UV) run --frozen python benchmarks/locktime.py --small 100000 --large 1000000

bench-locktrace: install  ## the lock trace: each statement at 1M predicted from 100k against measured, and tracing's cost
	@$(UV) run --frozen python benchmarks/lock_trace.py --small 100000 --large 1000000 $(if $(BENCH_DSN),--dsn $(BENCH_DSN))
