# The vLLM check environment: only the packages of the `vllm-check` extra in pyproject.toml (vLLM and the
# PyTorch release it needs; not kubetune itself), used on CPU to parse rendered `vllm serve` arguments with
# vLLM's own parser (scripts/vllm_args.py, tests/vllm.py). Large (about 8 GB, PyTorch from PyPI with its CUDA
# libraries); kept outside the repo and rebuilt only when pyproject.toml changes. Tests that need it skip
# without it.
#
#   make vllm-venv                      build it (first time: minutes; see the timing it prints)

VLLM_VENV ?= $(HOME)/.cache/kubetune/vllm-venv
VLLM_PYTHON ?= python3.11
VLLM_PY := $(VLLM_VENV)/bin/python

.PHONY: vllm-venv

vllm-venv: $(VLLM_VENV)/.installed
$(VLLM_VENV)/.installed: pyproject.toml
	@mkdir -p $(dir $(VLLM_VENV))
	@[ -x $(VLLM_PY) ] || $(VLLM_PYTHON) -m venv $(VLLM_VENV)
	@pins=$$($(VLLM_PY) -c 'import tomllib; print(" ".join(tomllib.load(open("$(CURDIR)/pyproject.toml", "rb"))["project"]["optional-dependencies"]["vllm-check"]))') && \
	start=$$(date +%s) && \
	$(VLLM_PY) -m pip install --quiet $$pins && \
	echo "vllm venv $(VLLM_VENV) installed ($$pins) in $$(( $$(date +%s) - start ))s"
	@touch $@
