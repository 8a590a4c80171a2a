"""The CEL rules: declared on the models, collected into the CRDs, and evaluated offline with the same
message (kubetune.api.cel)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubetune.api import finetunejob as ftj
from kubetune.api import modelserve as ms
from kubetune.api.cel import VALIDATIONS, Rule
from kubetune.api.common import NAME_RULE, Model
from kubetune.api.crd import all_crds
from kubetune.api.podspec import PodSecurity
from kubetune.api.validation import RulesHeld, describe, finetunejob_spec, spec_of
from tests import specs
from tests.refusals import declared_rules

# What both the API server (cel-go with the Kubernetes libraries) and the offline interpreter (cel-rust)
# know: the standard macros, functions and operators. A rule that needs more (a Kubernetes extension such as
# `quantity()` or `.join()`) would be refused offline only with an evaluation error: extend this on purpose.
PORTABLE = {
    "has", "all", "exists", "filter", "size", "matches", "startsWith", "@in", "@not_strictly_false",
    "!_", "_&&_", "_||_", "_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_", "_+_", "_?_:_", "_[_]",
}  # fmt: skip


def crd_rules(node: Any) -> list[dict[str, str]]:
    if isinstance(node, dict):
        return [*node.get(VALIDATIONS, []), *(r for v in node.values() for r in crd_rules(v))]
    if isinstance(node, list):
        return [r for v in node for r in crd_rules(v)]
    return []


def refusal(model: type[Model], value: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as error:
        model.model_validate(value)
    return describe(error.value)


def test_every_declared_rule_is_in_a_crd_and_every_crd_rule_is_declared() -> None:
    in_crds = {(r["rule"], r["message"]) for crd in all_crds().values() for r in crd_rules(crd)}
    declared = {(r.rule, r.message) for r in [*declared_rules(), NAME_RULE]}
    assert declared == in_crds
    assert len(declared) >= 13


@pytest.mark.parametrize("rule", declared_rules(), ids=lambda r: r.message[:40])
def test_every_rule_compiles_offline_with_only_portable_cel(rule: Rule) -> None:
    assert set(rule.program.functions()) <= PORTABLE, rule.rule
    assert "self" in rule.program.variables()


def test_each_kind_gets_the_rules_of_the_models_it_shares() -> None:
    crds = all_crds()
    ftj_spec = crds["finetunejobs.kubetune.io.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    ms_spec = crds["modelserves.kubetune.io.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for spec in (ftj_spec["properties"]["spec"], ms_spec["properties"]["spec"]):
        (root,) = spec["properties"]["podSecurity"][VALIDATIONS]
        assert root["rule"] == PodSecurity.cel_rules[0].rule
        assert "hubTokenSecret" in spec["properties"]["model"][VALIDATIONS][0]["rule"]
    assert ftj_spec[VALIDATIONS] == ms_spec[VALIDATIONS] == [NAME_RULE.schema()]


def test_a_rule_on_a_model_refuses_with_its_message_where_the_api_server_points() -> None:
    resources = {"nodes": 2, "gpusPerNode": 8, "processesPerNode": 2}
    said = refusal(ftj.FineTuneJobSpec, {**_ftj(), "resources": resources})
    assert said == (
        "spec.resources.processesPerNode: resources.processesPerNode is for CPU nodes (gpusPerNode: 0): "
        "with GPUs, torchrun starts one process per GPU"
    )


def test_every_broken_rule_of_a_node_is_said() -> None:
    said = refusal(ms.AutoscalingSpec, {"minReplicas": 3, "maxReplicas": 2, "provider": "keda"})
    assert "minReplicas must not exceed" in said and "prometheusAddress is needed" in said


def test_a_rule_on_a_field_applies_only_when_the_field_is_there() -> None:
    assert ftj.StorageSpec.model_validate({"claim": "shared"}).path is None
    assert ftj.StorageSpec.model_validate({"claim": "shared", "path": "runs/x"}).path == "runs/x"
    for path in ("runs/../..", ".", "./", "a/.."):
        said = refusal(ftj.StorageSpec, {"claim": "shared", "path": path})
        assert said == "spec.path: storage.path must stay on the claim: no '..', and not the claim's root"


def test_has_means_present_in_the_manifest_not_defaulted() -> None:
    # runAsNonRoot defaults to true in the model; the rule reads what the manifest says, as the API server.
    assert "runAsUser 0 is root" in refusal(PodSecurity, {"runAsUser": 0})
    assert "runAsUser 0 is root" in refusal(PodSecurity, {"runAsUser": 0, "runAsNonRoot": True})
    assert PodSecurity.model_validate({"runAsUser": 0, "runAsNonRoot": False}).run_as_user == 0
    assert PodSecurity.model_validate({"runAsNonRoot": True}).run_as_user is None


def test_a_null_field_is_an_absent_one() -> None:
    # The API server prunes nulls of fields that are not nullable before it validates.
    model = ftj.ModelSpec.model_validate({"source": "pvc://shared/models/x", "hubTokenSecret": None})
    assert model.hub_token_secret is None


def test_a_message_expression_names_the_culprit_and_falls_back_to_the_message() -> None:
    said = refusal(ftj.DatasetSpec, {"names": ["a"], "evalNames": ["b"], "info": {"a": {}}})
    assert said.endswith("needs an entry in dataset.info: b has none")
    rule = Rule("false", "plain", message_expression="self.missing[0]")
    assert rule.message_for({}) == "plain"


def test_a_transition_rule_is_left_to_the_api_server() -> None:
    (immutable,) = ftj.StorageSpec.cel_rules
    assert immutable.transition and "oldSelf" in immutable.rule
    assert immutable.holds({"claim": "shared"})
    assert not any(rule.transition for rule in declared_rules() if rule is not immutable)


def test_an_evaluation_error_refuses_as_in_the_api_server() -> None:
    assert not Rule("self.a > 1", "a above 1").holds({"a": "text"})
    assert not Rule("self.a > 1", "a above 1").holds({})


def test_the_name_rule() -> None:
    assert NAME_RULE.holds({"metadata": {"name": "clue-ner-qwen7b"}})
    for name in ("Clue", "a_b", "-a", "a" * 64, ""):
        assert not NAME_RULE.holds({"metadata": {"name": name}}), name


def _ftj() -> dict[str, Any]:
    return specs.finetunejob_spec(deepspeed=None)


def _stored(spec: dict[str, Any], generation: int = 1, uid: str = "uid-a") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "generation": generation}, "spec": spec}


@pytest.fixture
def rules_evaluated(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The rules evaluated offline, in order."""
    evaluated: list[str] = []
    holds = Rule.holds

    def counted(rule: Rule, value: Any) -> bool:
        evaluated.append(rule.rule)
        return holds(rule, value)

    monkeypatch.setattr(Rule, "holds", counted)
    return evaluated


def test_a_stored_specs_rules_are_checked_once_per_generation(rules_evaluated: list[str]) -> None:
    held = RulesHeld()
    first, problems = spec_of(_stored(_ftj()), finetunejob_spec, held)
    assert first is not None and not problems and rules_evaluated
    evaluated = len(rules_evaluated)

    again, _ = spec_of(_stored(_ftj()), finetunejob_spec, held)
    assert again == first and len(rules_evaluated) == evaluated

    spec_of(_stored(_ftj(), generation=2), finetunejob_spec, held)  # an edit: a new generation
    spec_of(_stored(_ftj(), uid="uid-b"), finetunejob_spec, held)  # another resource
    assert len(rules_evaluated) == 3 * evaluated


def test_a_stored_spec_that_breaks_a_rule_is_refused_on_every_pass() -> None:
    """Stored before the rule existed: the API server never checked it, and it is never taken as held."""
    held = RulesHeld()
    broken = _stored({**_ftj(), "resources": {"nodes": 2, "gpusPerNode": 8, "processesPerNode": 2}})
    for _ in range(2):
        spec, problems = spec_of(broken, finetunejob_spec, held)
        assert spec is None and "processesPerNode is for CPU nodes" in problems[0].message


def test_a_spec_without_a_generation_is_always_checked_and_the_memory_is_bounded(
    rules_evaluated: list[str],
) -> None:
    held = RulesHeld(size=2)
    for _ in range(2):
        spec_of({"spec": _ftj()}, finetunejob_spec, held)  # not stored: no uid, no generation
    once = len(rules_evaluated) // 2
    for uid in ("a", "b", "c"):
        spec_of(_stored(_ftj(), uid=uid), finetunejob_spec, held)
    assert ("a", 1) not in held and ("b", 1) in held and ("c", 1) in held
    assert len(rules_evaluated) == 5 * once
