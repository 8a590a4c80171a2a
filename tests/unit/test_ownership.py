"""Who owns a child (`kubetune.kube`): the pure part of the ownership check before every apply.
The behaviour against the API server is in tests/integration/test_ownership.py."""

from __future__ import annotations

from typing import Any

from kubetune.kube import NotOurs, _our_orphan, child_problem, controller_uid, holder


def obj(owner_uid: str | None = None, labels: dict[str, str] | None = None, managers=(), kind="ConfigMap"):
    meta: dict[str, Any] = {"name": "ner-config", "labels": labels or {}}
    if owner_uid:
        meta["ownerReferences"] = [
            {"kind": "FineTuneJob", "name": "ner", "uid": owner_uid, "controller": True},
        ]
    meta["managedFields"] = [{"manager": m, "operation": op} for m, op in managers]
    return {"kind": kind, "metadata": meta}


OURS = {"kubetune.io/finetunejob": "ner", "app.kubernetes.io/managed-by": "kubetune"}


def test_the_controller_is_the_owner_reference_marked_controller() -> None:
    assert controller_uid(obj("u1")) == "u1"
    assert controller_uid(obj()) is None
    not_controller = {"metadata": {"ownerReferences": [{"uid": "u2", "controller": False}]}}
    assert controller_uid(not_controller) is None


def test_the_holder_is_named_for_a_person() -> None:
    assert holder(obj("u1")) == "controlled by FineTuneJob ner uid u1"
    assert holder(obj(managers=[("kubectl-create", "Update")])) == "no controller; written by kubectl-create"


def test_an_orphan_the_operator_applied_for_this_name_is_taken_back() -> None:
    manifest = obj("new-uid", labels=OURS)
    assert _our_orphan(obj(labels=OURS, managers=[("kubetune", "Apply")]), manifest)


def test_anything_else_is_someone_elses() -> None:
    manifest = obj("new-uid", labels=OURS)
    # Controlled by another uid (an earlier resource, still being garbage-collected).
    assert not _our_orphan(obj("old-uid", labels=OURS, managers=[("kubetune", "Apply")]), manifest)
    # Someone copied the labels, but the operator never applied it.
    assert not _our_orphan(obj(labels=OURS, managers=[("kubectl-client-side-apply", "Update")]), manifest)
    # Another resource's orphan.
    other = {**OURS, "kubetune.io/finetunejob": "other"}
    assert not _our_orphan(obj(labels=other, managers=[("kubetune", "Apply")]), manifest)
    # A training Job is never re-adopted: it is an attempt of the resource that made it.
    job = obj(labels=OURS, managers=[("kubetune", "Apply")], kind="Job")
    assert not _our_orphan(job, {**manifest, "kind": "Job"})


def test_a_conflict_waits_and_names_the_object_and_its_holder() -> None:
    problem = child_problem(NotOurs("Service", "foo-workers", "no controller; written by helm"))
    assert (problem.reason, problem.terminal) == ("ChildConflict", False)
    assert "Service foo-workers already exists" in problem.message and "helm" in problem.message
