# The project's verbs. `make setup && make test` is all a fresh machine needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
DEMO_DIR ?= demo
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: help setup test test-full lint format repro demo demo-diffusion demo-clean data-demo ui tune tune-ui push pull

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create .venv and install cxraug with its dev tools

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

test: setup  ## fast test suite (what CI runs, ~5 min on 2 cores)
	$(BIN)/pytest -m "not slow"

test-full: setup  ## every test, including the slow training ones
	$(BIN)/pytest

lint: setup  ## ruff checks
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: setup  ## ruff format + autofix
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

data-demo: setup  ## put the synthetic phantom data set in data/raw and record it in data.dvc
	$(BIN)/cxraug demo-data data/raw
	$(BIN)/dvc commit -f -q data.dvc

repro: setup  ## run the pipeline on data/raw (dvc repro)
	$(BIN)/dvc repro

demo: setup  ## whole pipeline on synthetic phantoms in ./$(DEMO_DIR), its own git + DVC project (dvc exp works there)
	@mkdir -p $(DEMO_DIR)
	@test -e $(DEMO_DIR)/.git || (cd $(DEMO_DIR) && git init -q && git config user.name "cxraug demo" \
		&& git config user.email demo@localhost && printf 'mlruns/\ncheckpoints/\ntuning/\n.dvc-remote/\n' > .gitignore)
	@test -e $(DEMO_DIR)/.dvc || (cd $(DEMO_DIR) && $(BIN)/dvc init -q && $(BIN)/dvc config core.analytics false \
		&& $(BIN)/dvc remote add -d local ../.dvc-remote)
	@cp dvc.yaml data.dvc .dvcignore $(DEMO_DIR)/ && ln -sfn $(CURDIR)/src $(DEMO_DIR)/src
	@mkdir -p $(DEMO_DIR)/metrics/external && cp metrics/external/README.md $(DEMO_DIR)/metrics/external/
	$(BIN)/cxraug params --overlay params.demo.yaml $(DEMO_OVERLAY) > $(DEMO_DIR)/params.yaml
	@test -e $(DEMO_DIR)/data/raw || (cd $(DEMO_DIR) && $(BIN)/cxraug demo-data data/raw && $(BIN)/dvc commit -f -q data.dvc)
	cd $(DEMO_DIR) && time $(BIN)/dvc repro report summary  # the report, the summary and everything they read
	@cd $(DEMO_DIR) && git add -A && (git diff --cached --quiet || git commit -q -m "demo: dvc repro") \
		&& echo "demo committed: try 'cd $(DEMO_DIR) && dvc exp run -S classify.lr=0.001 && dvc exp show'"

demo-diffusion:  ## the demo with the diffusion model as a third generator (CPU: ~10 more minutes per replicate, measured busy)
	$(MAKE) demo DEMO_OVERLAY="--overlay params.demo-diffusion.yaml"

push: setup  ## dvc push: prepared data, synthetic images, models to the DVC remote (DIR=demo for the demo's)
	cd $(or $(DIR),.) && $(BIN)/dvc push

pull: setup  ## dvc pull: everything the pipeline produced, back from the DVC remote (DIR=demo for the demo's)
	@# --allow-missing: stages that never ran (the demo leaves train_diffusion out) have nothing to fetch
	cd $(or $(DIR),.) && $(BIN)/dvc pull --allow-missing

demo-clean:  ## remove the demo project
	rm -rf $(DEMO_DIR)

ui: setup  ## MLflow UI for this project's runs on http://127.0.0.1:5000 (DIR=demo for the demo's)
	cd $(or $(DIR),.) && $(BIN)/mlflow ui --app-name cxraug --backend-store-uri sqlite:///mlruns/mlflow.db \
		--default-artifact-root ./mlruns --host 127.0.0.1 --port 5000

GAN ?= bagan
TRIALS ?= 4
STORAGE ?= sqlite:///mlruns/optuna.db

tune: setup  ## Optuna search, one worker (GAN=bagan|opengan TRIALS=4 STORAGE=url DIR=demo): tuning/best_<gan>.yaml
	cd $(or $(DIR),.) && $(BIN)/cxraug tune --gan $(GAN) --n-trials $(TRIALS) --storage '$(STORAGE)'

tune-ui: setup  ## optuna-dashboard for the studies in STORAGE on http://127.0.0.1:8080 (DIR=demo for the demo's)
	@command -v optuna-dashboard >/dev/null || { echo "optuna-dashboard is not installed in $(BIN):" \
		"install the 'dashboard' extra with: $(BIN)/pip install -e '.[dashboard]'" >&2; exit 1; }
	cd $(or $(DIR),.) && optuna-dashboard '$(patsubst journal:%,%,$(STORAGE))' --host 127.0.0.1 --port 8080

# benchmarks and multi-process training
NPROC ?= 2
STAGE ?= train-bagan

.PHONY: bench bench-smoke bench-scale bench-study train-ddp gpu-check mutation

bench: setup  ## every training loop vs bare loop, matmul peak and dcgan-style loop -> benchmarks/results/
	$(BIN)/cxraug bench all

bench-smoke: setup  ## the benchmark suite at tiny sizes (checks it runs, ~1 min)
	$(BIN)/cxraug bench all --smoke --out benchmarks/results/smoke.md

bench-scale: setup  ## time and memory of the data path at 5k, 10k, 20k demo images (~3.5 min on 2 busy cores)
	$(BIN)/cxraug bench scale --out benchmarks/results/scale.md

bench-study: setup  ## projected wall time of the whole dvc repro on this device -> benchmarks/results/study.md
	$(BIN)/cxraug bench study --out benchmarks/results/study.md

train-ddp: setup  ## one stage in NPROC processes: make train-ddp STAGE=train-bagan NPROC=2
	$(BIN)/torchrun --standalone --nproc_per_node $(NPROC) -m cxraug.cli $(STAGE)

gpu-check: setup  ## the CUDA check (bench on CUDA, NCCL, CUDA tests) -> $(OUT) (default gpu-check/)
	bash scripts/gpu_check.sh

GROUPS ?=
mutation: setup  ## mutmut kill rates of the modules behind reported numbers (GROUPS=auc ...; docs/testing.md), not in CI
	nice -n 10 $(BIN)/python scripts/mutation.py $(GROUPS) --out .mutation/summary.md
