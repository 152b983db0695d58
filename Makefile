# macelab: `make run` trains the quick-start model and prints its test table; `make test`
# runs the test suite; `make docs` builds the documentation site (warnings fail it);
# `make check-wheel` builds the wheel, installs it into a fresh venv and runs its console
# scripts. All create .venv on first use (Python >= 3.11) and install macelab into it, with
# the CPU build of torch where no NVIDIA GPU is present.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
# Without a GPU: the Triton version whose CPU interpreter the kernel tests run in (with a
# GPU, the CUDA build of torch brings its own).
TRITON_CPU_VERSION ?= 3.6.0
BIN := $(VENV)/bin
# Tests and runs read the benchmark data from MACELAB_DATA; default: ../shared/data if present.
MACELAB_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export MACELAB_DATA
PYTEST_ARGS ?= -n 2 -q --durations=25
# The extras installed for development: everything the tests and the docs use.
EXTRAS ?= dev,mace,slurm,cueq,tensorboard,wandb,hparams,docs
SITE_DIR ?= site

.PHONY: install run test test-all lint format docs check-wheel clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "macelab needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install -q "torch==$(TORCH_VERSION)"; \
	else \
		echo "no NVIDIA GPU: installing the CPU build of torch $(TORCH_VERSION)"; \
		$(BIN)/pip install -q --retries 0 --timeout 10 "torch==$(TORCH_VERSION)" \
			--index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
		|| $(BIN)/pip install -q "torch==$(TORCH_VERSION)"; \
		echo "and triton $(TRITON_CPU_VERSION), whose interpreter runs the kernel tests on CPU"; \
		$(BIN)/pip install -q "triton==$(TRITON_CPU_VERSION)"; \
	fi
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	@touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python -m macelab.train

# make test: all but the heavy tier (tests/conftest.py HEAVY), about 10 minutes on two cores;
# make test-all: everything, as CI runs it (about 25 minutes on two cores).
test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m "not heavy" $(PYTEST_ARGS)

test-all: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(SITE_DIR)

check-wheel: install
	bash .ci/check_wheel $(BIN)/python

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) outputs .pytest_cache site
