"""The labels the operator puts on what it creates, spelled once. They select a Service's pods, find a
resource's children, index the operator's cache and filter its watches; users and tools select by them
too, so a change here is a change to the API."""

from __future__ import annotations

PREFIX = "kubetune.io"
MANAGED_BY = "kubetune"

# Kubernetes' recommended labels, on every child.
APP_NAME = "app.kubernetes.io/name"
APP_MANAGED_BY = "app.kubernetes.io/managed-by"
# The operator watches only the Pods, Jobs and Deployments that carry it.
CHILDREN_SELECTOR = f"{APP_MANAGED_BY}={MANAGED_BY}"

# A child's owner, by name: `kubetune.io/finetunejob: <name>` on a FineTuneJob's attempts, their pods and
# its rendezvous Service; `kubetune.io/modelserve: <name>` on a ModelServe's children.
FINETUNEJOB = f"{PREFIX}/finetunejob"
MODELSERVE = f"{PREFIX}/modelserve"
OWNERS = (FINETUNEJOB, MODELSERVE)
# The preprocessing Job and its pod carry this, not FINETUNEJOB: they are no attempt, and the rendezvous
# Service selects the trainer pods by FINETUNEJOB.
PREPROCESS_OF = f"{PREFIX}/preprocess-of"
# On a ModelServe's report ConfigMap, where its pods' sidecars say what vLLM serves: a report wakes its
# ModelServe at once.
ADAPTER_REPORT = f"{PREFIX}/adapter-report"
# A ModelServe's children of every kind (its ConfigMaps, Service, ServiceAccount, Role, RoleBinding and
# autoscaler): the operator watches them by it, to tell whether each still stands as it wrote it, so that
# a settled ModelServe costs the API server nothing (runtime/cache.py).
MODELSERVE_CHILDREN_SELECTOR = f"{CHILDREN_SELECTOR},{MODELSERVE}"
# Labels that name an owner: the index the reconciles' label selectors go through.
INDEXED = (*OWNERS, PREPROCESS_OF)
# On a FineTuneJob's training Job and its pods: the attempt (1, 2, ...); the status counts attempts by it.
ATTEMPT = f"{PREFIX}/attempt"

# Kueue's queue, on a training Job whose FineTuneJob names one (`spec.queueName`).
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
