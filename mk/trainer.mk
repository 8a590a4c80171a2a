# The trainer virtual environment: kubetune plus LLaMA-Factory and PyTorch, from the `trainer` extra in
# pyproject.toml. Large (PyTorch from PyPI with its CUDA libraries, several GB); kept outside the repo and
# rebuilt only when pyproject.toml changes. Used by scripts/gen_llamafactory_args.py and the tests that
# check operator/kubetune/api/data/llamafactory-*.json against the installed release.
#
#   make trainer-venv                   build it (first time: minutes; see the timing it prints)
#   make trainer-args                   regenerate the LLaMA-Factory argument data file
#   make trainer-args-check             fail when that file differs from what the installed release gives

TRAINER_VENV ?= $(HOME)/.cache/kubetune/trainer-venv
TRAINER_PYTHON ?= python3.11
TRAINER_PY := $(TRAINER_VENV)/bin/python

.PHONY: trainer-venv trainer-args trainer-args-check

trainer-venv: $(TRAINER_VENV)/.installed
$(TRAINER_VENV)/.installed: pyproject.toml
	@mkdir -p $(dir $(TRAINER_VENV))
	@[ -x $(TRAINER_PY) ] || $(TRAINER_PYTHON) -m venv $(TRAINER_VENV)
	@start=$$(date +%s); \
	$(TRAINER_PY) -m pip install --quiet -e '$(CURDIR)[trainer,dev]' && \
	echo "trainer venv $(TRAINER_VENV) installed in $$(( $$(date +%s) - start ))s"
	@touch $@

trainer-args: trainer-venv
	$(TRAINER_PY) scripts/gen_llamafactory_args.py

trainer-args-check: trainer-venv
	$(TRAINER_PY) scripts/gen_llamafactory_args.py --check
