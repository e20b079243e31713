# nemo_recipes: every target runs inside .venv (created on first use). Hydra overrides go in ARGS:
#   make demo ARGS="teacher_sampling.n=16 sft.max_steps=60"
SHELL := /bin/bash
PYTHON_SYSTEM ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NEMO_VENV := .venv-nemo
ARGS ?=
# A CPU box must never resolve a CUDA torch: every pip call is constrained to the local CPU build.
PIP_CONSTRAINT := -c constraints/cpu.txt

.DEFAULT_GOAL := help
.PHONY: help install test test-fast test-nemo demo plan reproduce-main ablation-scale bench-packing bench-grading bench-generation clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	test -x $(PY) || $(PYTHON_SYSTEM) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q $(PIP_CONSTRAINT) "torch==2.13.0" -e ".[dev]"
	touch $@

install: $(VENV)/.installed ## create .venv with the package, CPU torch and test tools

$(NEMO_VENV)/.installed: requirements/nemo-cpu.txt constraints/cpu.txt pyproject.toml
	test -x $(NEMO_VENV)/bin/python || $(PYTHON_SYSTEM) -m venv $(NEMO_VENV)
	$(NEMO_VENV)/bin/pip install -q -U pip
	$(NEMO_VENV)/bin/pip install -q $(PIP_CONSTRAINT) "torch==2.13.0" -r requirements/nemo-cpu.txt
	$(NEMO_VENV)/bin/pip install -q --no-deps -e .
	touch $@

test: $(VENV)/.installed $(NEMO_VENV)/.installed ## all tests on CPU: unit, toy pipeline end to end, and NeMo-compat
	$(PY) -m pytest -q --runslow tests
	$(NEMO_VENV)/bin/python -m pytest -q -m nemo_compat tests/nemo_compat

test-fast: $(VENV)/.installed ## unit tests only (skips the slow toy-pipeline runs)
	$(PY) -m pytest -q tests

test-nemo: $(NEMO_VENV)/.installed ## our packed data and YAML against the real NeMo 2.1 / NeMo-Aligner 0.7 classes
	$(NEMO_VENV)/bin/python -m pytest -q -m nemo_compat tests/nemo_compat

demo: $(VENV)/.installed ## the whole pipeline on CPU with toy models the package builds (minutes, no GPU)
	$(PY) -m nemo_recipes experiment=demo $(ARGS)

plan: $(VENV)/.installed ## print the plan of an experiment: make plan ARGS="experiment=main"
	$(PY) -m nemo_recipes dry_run=true $(ARGS)

reproduce-main: $(VENV)/.installed ## the paper's main run: Qwen2.5-32B SFT on 20 QwQ-32B-Preview traces (GPU node)
	$(PY) -m nemo_recipes experiment=main dry_run=true $(ARGS)
	@$(PY) -m nemo_recipes.gpu_check "make reproduce-main"
	$(PY) -m nemo_recipes experiment=main $(ARGS)

ablation-scale: $(VENV)/.installed ## the same recipe on Qwen2.5-7B, -14B and -32B (GPU node)
	for size in 7b 14b 32b; do \
	  $(PY) -m nemo_recipes experiment=main student=qwen2.5-$$size experiment_name=ablation-scale-$$size dry_run=true $(ARGS) || exit 1; \
	done
	@$(PY) -m nemo_recipes.gpu_check "make ablation-scale"
	for size in 7b 14b 32b; do \
	  $(PY) -m nemo_recipes experiment=main student=qwen2.5-$$size experiment_name=ablation-scale-$$size $(ARGS) || exit 1; \
	done

bench-packing: $(NEMO_VENV)/.installed ## our packing vs NeMo's first_fit_shuffle (time and fill, as a ratio)
	$(NEMO_VENV)/bin/python benchmarks/packing.py

bench-grading: $(VENV)/.installed ## our grader vs a naive parse+verify loop on 256 x 64 synthetic generations
	$(PY) benchmarks/grading.py

bench-generation: $(VENV)/.installed ## batched hf generation vs one prompt at a time on the toy teacher (tokens/s)
	$(PY) benchmarks/generation.py

clean: ## remove the toy demo's run folder (runs/demo); models in the cache are kept
	rm -rf runs/demo
