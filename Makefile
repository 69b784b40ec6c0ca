# cough_pipeline — `make demo` and `make test` work on a fresh machine: each creates .venv if missing,
# installs missing system packages (apt-get as root, else prints the command), installs the project, and
# is a no-op the second time.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := ffmpeg sox libsox-dev
# The production path (make services) and its tests: PostgreSQL, Redis, and Chromium for the browser test.
SERVICE_PACKAGES := postgresql redis-server chromium chromium-driver
# The Dagster instance (runs, event logs) and, unless COUGH_PIPELINE_STORAGE / _CATALOG say otherwise, the tables:
# $DAGSTER_HOME from the environment when set, else dagster_home/ here.
ifeq ($(strip $(DAGSTER_HOME)),)
DAGSTER_HOME := $(CURDIR)/dagster_home
endif
export DAGSTER_HOME
# pip's "location ignored" warnings for absent local mirrors are noise here.
PIP := $(PY) -m pip --quiet
PIP_FILTER := 2>&1 | { grep -v "^WARNING: Location" || true; }
PARTITION ?= coughvid
PYTEST_ARGS ?=
BENCH ?=

.PHONY: services services-down demo test lint format constraints ui settings bench backfill sql catalog separation-experiment classify-experiment distill-experiment predict install system-deps clean-data

demo: install
	$(PY) -m assets.demo

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff: lint and formatting (line length 120, pyproject.toml); CI runs it before the tests.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Rewrite constraints.txt from what .venv holds now (after an upgrade that passed `make test`).
constraints: install
	@{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^#'; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt && echo "constraints.txt: $$(grep -vc '^#' constraints.txt) pinned packages"

# Settings are checked (and runs left unfinished by a killed `make demo`/`make backfill` failed) before the UI starts.
ui: install
	$(PY) -m resources.environment
	$(PY) -m assets.orphans
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The effective settings (DAGSTER_HOME, profile, storage, dataset roots), or one line per invalid setting.
settings: install
	@$(PY) -m resources.environment

bench: install
	$(PY) -m benchmarks $(BENCH)

# Re-materialise one dataset partition and the per-dataset assets downstream of it: make backfill PARTITION=coughvid
# (SUMMARIES=1 also refreshes the unpartitioned assets that read every partition)
backfill: install
	$(PY) -m assets.backfill --partition $(PARTITION) $(if $(SUMMARIES),--with-summaries,)

# Train + evaluate the separator on real coughs (Virufy segments, ESC-50 coughing) over ESC-50 noise
SHARED ?= ../shared/data
PROFILE ?= modest
separation-experiment: install
	$(PY) -m cough_pipeline.separation.experiment --virufy $(SHARED)/virufy --esc50 $(SHARED)/esc50 \
		--out $(DAGSTER_HOME)/data/separation_experiment --profile $(PROFILE)

# One recording's COVID-19 probability from the champion classifier (after `make demo`).
predict: install
	@test -n "$(FILE)" || { echo "usage: make predict FILE=path/to/recording.wav" >&2; exit 2; }
	$(PY) -m assets.predict "$(FILE)"

classify-experiment: install
	$(PY) -m cough_pipeline.classification.experiment --virufy $(SHARED)/virufy \
		--out $(DAGSTER_HOME)/data/classify_experiment

# MobileNetV3-Small students at 1 and 2 kHz on ESC-50 (fine-tuned vs Born-Again vs cross-rate distillation): the
# shared fold-4 clips cut into 5 folds grouped by src_file; the report goes to $(DAGSTER_HOME)/data/distill_experiment
DISTILL_EPOCHS ?= 20
DISTILL_PATIENCE ?= 10
# DISTILL_GENERATIONS=3 adds a third generation taught by each distilled student
DISTILL_GENERATIONS ?= 2
DISTILL_OUT ?= $(DAGSTER_HOME)/data/distill_experiment
distill-experiment: install
	$(PY) -m cough_pipeline.distillation.experiment --esc50 $(SHARED)/esc50_fold4 --model mobilenetv3_small \
		--rates 1000 2000 --epochs $(DISTILL_EPOCHS) --patience $(DISTILL_PATIENCE) \
		--generations $(DISTILL_GENERATIONS) --out $(DISTILL_OUT)

# Query the DuckDB catalog: make sql Q="SELECT dataset, count(*) FROM manifest GROUP BY ALL"
sql: install
	@$(PY) -c "import duckdb, sys; print(duckdb.connect(sys.argv[1], read_only=True).sql(sys.argv[2]))" \
		"$${COUGH_PIPELINE_CATALOG:-$(DAGSTER_HOME)/warehouse.duckdb}" "$(Q)"

# (Re)create the DuckDB view of every table, e.g. after a run that found the catalog held by another client.
catalog: install
	@$(PY) -m resources.catalog

# The production path on this machine: PostgreSQL (instance storage, port 5433), Redis (Celery broker, port 6380), two
# Celery workers and the Dagster webserver + daemon on deploy/dagster.yaml, state and data under .services/.
# `make services-down` stops exactly the processes `make services` started (recorded in .services/state.json).
services: install
	$(PY) -m resources.environment
	$(PY) -m deploy.services start --ui

services-down:
	@if [ -x $(PY) ]; then $(PY) -m deploy.services stop; else echo "nothing to stop (.venv is missing)"; fi

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt | system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (the first time downloads torch: several GB)"
	@# torch and torchvision in one step so pip picks a matching pair (timm needs both).
	@$(PIP) install -c constraints.txt torch torchvision $(PIP_FILTER)
	@$(PIP) install -c constraints.txt -e '.[dev]' $(PIP_FILTER)
	@$(PY) -c "import timm, scaper, museval, dagster" || { echo "install check failed: see the import error above"; exit 1; }
	@touch $(STAMP)

system-deps:
	@missing=""; \
	for tool in ffmpeg ffprobe sox; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	test -f /usr/include/sox.h || missing="$$missing libsox-dev"; \
	optional=""; \
	for tool in redis-server chromium chromedriver; do command -v $$tool >/dev/null || optional="$$optional $$tool"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || optional="$$optional postgresql"; \
	if [ -n "$$missing$$optional" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages: $(SYSTEM_PACKAGES) $(SERVICE_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) $(SERVICE_PACKAGES) >/dev/null; \
	  elif [ -n "$$missing" ]; then \
	    echo "missing system packages:$$missing"; \
	    echo "install them with:  sudo apt-get install -y $(SYSTEM_PACKAGES) $(SERVICE_PACKAGES)   (macOS: brew install ffmpeg sox)"; \
	    exit 1; \
	  else \
	    echo "note: without$$optional, make services and the PostgreSQL/Celery/browser tests are unavailable (they skip);"; \
	    echo "      install them with:  sudo apt-get install -y $(SERVICE_PACKAGES)"; \
	  fi; \
	fi

# Deletes the run data of the instance in $(DAGSTER_HOME): only what Dagster and the pipeline write there, never
# dagster.yaml or the folder itself. A DAGSTER_HOME outside this project (perhaps another project's instance) also
# needs CONFIRM=1.
clean-data:
	@case "$(DAGSTER_HOME)" in /?*) ;; *) echo "clean-data: DAGSTER_HOME='$(DAGSTER_HOME)' is not an absolute path; nothing deleted" >&2; exit 2;; esac
	@if [ "$(DAGSTER_HOME)" != "$(CURDIR)/dagster_home" ] && [ "$(CONFIRM)" != 1 ]; then \
	  echo "clean-data: DAGSTER_HOME=$(DAGSTER_HOME) is outside this project; run 'make clean-data CONFIRM=1' to delete its data, warehouse.duckdb, history, storage, schedules and logs" >&2; exit 2; fi
	cd "$(DAGSTER_HOME)" && test "$$(pwd -P)" != / && rm -rf data warehouse.duckdb history storage schedules logs
