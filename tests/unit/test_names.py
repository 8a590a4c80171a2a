"""Child names (`kubetune.render.names`): deterministic, valid, and never colliding, within a kind and across
the two kinds (a FineTuneJob and a ModelServe in one namespace)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetune.render.names import FineTuneJobNames, ModelServeNames, dns_label

DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
HASH_SUFFIX = re.compile(r"-[0-9a-f]{8}$")

# FineTuneJob names are DNS subdomains: up to 253 characters, dots allowed, digits first allowed.
NAMES = [
    "ner",
    "clue-ner-qwen7b",
    "qwen2.5-7b-lora",
    "7b-lora",
    "a" * 50,
    "a" * 63,
    "a" * 64,
    "a" * 253,
    "team-a.experiments.qwen2-5-7b-instruct-lora-sft-on-the-clue-ner-data-set-v2",
    "x" + "-y" * 100,
]


def children(names: FineTuneJobNames) -> dict[str, str]:
    return {
        "config_map": names.config_map,
        "service": names.service,
        "service_account": names.service_account,
        "role": names.role,
        "job_a1": names.job(1),
        "job_a100": names.job(100),
    }


@pytest.mark.parametrize("name", NAMES, ids=lambda n: n[:24])
def test_names_are_dns_1035_labels(name: str) -> None:
    for child, value in children(FineTuneJobNames(name)).items():
        assert DNS_1035_LABEL.match(value), f"{child}: {value!r}"


@pytest.mark.parametrize("name", NAMES, ids=lambda n: n[:24])
def test_names_fit_where_they_are_used(name: str) -> None:
    names = FineTuneJobNames(name)
    # The Service name is the pods' DNS subdomain: a label.
    assert len(names.service) <= 63
    for attempt in (1, 9, 100):
        job = names.job(attempt)
        assert len(job) <= 57
        # An Indexed Job's pod hostname is `<job>-<index>`, which must stay a label (nodes <= 512).
        assert len(f"{job}-511") <= 63
    assert len(names.config_map) <= 253
    assert len(names.service_account) <= 253


@pytest.mark.parametrize("name", NAMES, ids=lambda n: n[:24])
def test_names_are_deterministic(name: str) -> None:
    assert children(FineTuneJobNames(name)) == children(FineTuneJobNames(name))


def test_short_names_are_readable() -> None:
    names = FineTuneJobNames("clue-ner-qwen7b")
    assert children(names) == {
        "config_map": "clue-ner-qwen7b-config",
        "service": "clue-ner-qwen7b-workers",
        "service_account": "clue-ner-qwen7b-launcher",
        "role": "clue-ner-qwen7b-launcher",
        "job_a1": "clue-ner-qwen7b-a1",
        "job_a100": "clue-ner-qwen7b-a100",
    }
    assert names.master_addr(2, "team-a") == "clue-ner-qwen7b-a2-0.clue-ner-qwen7b-workers.team-a.svc"


def test_stable_across_releases() -> None:
    """Renaming children would orphan the Jobs of running FineTuneJobs on an operator upgrade."""
    names = FineTuneJobNames("a" * 70)
    assert names.service == "a" * 54 + "-fc851df4"
    assert names.job(1) == "a" * 48 + "-2122d9d8"


@pytest.mark.parametrize(
    ("name", "child", "limit"),
    [
        ("a" * 55, "job", 57),  # `<name>-a1` would be 58
        ("b" * 56, "service", 63),  # `<name>-workers` would be 64
        ("qwen2-5-7b-instruct-lora-sft-on-the-clue-ner-dataset-2025-01", "job", 57),
        ("qwen2-5-7b-instruct-lora-sft-on-the-clue-ner-dataset-2025-01", "service", 63),
    ],
)
def test_too_long_names_are_shortened_with_a_hash(name: str, child: str, limit: int) -> None:
    names = FineTuneJobNames(name)
    value = names.job(1) if child == "job" else names.service
    assert len(value) <= limit
    assert HASH_SUFFIX.search(value)
    # A readable prefix of the resource's name stays.
    assert value.startswith(name[:20])


def test_names_that_fit_keep_no_hash() -> None:
    name = "a" * 54  # `<name>-a1` is 57: just fits
    assert FineTuneJobNames(name).job(1) == f"{name}-a1"
    assert FineTuneJobNames(name + "b").job(1) != f"{name}b-a1"


def test_long_names_sharing_a_prefix_do_not_collide() -> None:
    prefix = "qwen2-5-7b-instruct-lora-sft-clue-ner-" + "x" * 22
    assert len(prefix) == 60
    first, second = FineTuneJobNames(prefix + "-run-1"), FineTuneJobNames(prefix + "-run-2")
    for child in ("service", "job_a1", "config_map", "service_account"):
        assert children(first)[child] != children(second)[child], child


def test_attempts_of_a_long_name_get_different_jobs() -> None:
    names = FineTuneJobNames("a" * 100)
    assert len({names.job(attempt) for attempt in range(1, 20)}) == 19


@pytest.mark.parametrize("name", ["7b-lora", "0", "2025-01-run"])
def test_names_starting_with_a_digit_get_a_letter_prefix(name: str) -> None:
    for child, value in children(FineTuneJobNames(name)).items():
        assert value[0].isalpha(), child
        assert name in value, child


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("ner", "workers"), "ner-workers"),
        (("qwen2.5", "workers"), "qwen2-5-workers-"),
        (("a..b", ""), "a-b-"),
        (("", ""), "x-"),
    ],
)
def test_dns_label_sanitises(parts: tuple[str, ...], expected: str) -> None:
    # A name that had to be cleaned ends in a hash of the original, so cleaning never makes two meet.
    name = dns_label(*parts)
    if expected.endswith("-"):
        assert name.startswith(expected) and re.fullmatch(r"[0-9a-f]{8}", name.removeprefix(expected))
    else:
        assert name == expected


@pytest.mark.parametrize(("first", "second"), [("a.b", "a-b"), ("7b", "x7b")])
def test_distinct_finetunejobs_never_share_child_names(first: str, second: str) -> None:
    a, b = children(FineTuneJobNames(first)), children(FineTuneJobNames(second))
    assert not set(a.values()) & set(b.values())


# --- ModelServe names, and the two kinds side by side ----------------------------------------------


def serve_children(names: ModelServeNames) -> dict[str, str]:
    return {
        "service": names.service,
        "deployment": names.deployment,
        "config_map": names.config_map,
        "autoscaler": names.autoscaler,
    }


def objects(kind: str, name: str) -> set[tuple[str, str]]:
    """The (API kind, name) pairs a resource of that kind renders: what must never meet in a namespace."""
    if kind == "FineTuneJob":
        n = FineTuneJobNames(name)
        return {
            ("ConfigMap", n.config_map),
            ("Service", n.service),
            ("ServiceAccount", n.service_account),
            ("Role", n.role),
            ("RoleBinding", n.role),
            *{("Job", n.job(attempt)) for attempt in (1, 2, 10, 100)},
        }
    m = ModelServeNames(name)
    return {
        ("ConfigMap", m.config_map),
        ("ConfigMap", m.report_config_map),
        ("ServiceAccount", m.sidecar_account),
        ("Role", m.sidecar_account),
        ("RoleBinding", m.sidecar_account),
        ("Service", m.service),
        ("Deployment", m.deployment),
        ("HorizontalPodAutoscaler", m.autoscaler),
        ("ScaledObject", m.autoscaler),
    }


def test_modelserve_short_names_are_readable() -> None:
    assert serve_children(ModelServeNames("qwen")) == {
        "service": "qwen-vllm",
        "deployment": "qwen-vllm",
        "config_map": "qwen-adapters",
        "autoscaler": "qwen-vllm",
    }


@pytest.mark.parametrize("name", NAMES, ids=lambda n: n[:24])
def test_modelserve_names_are_dns_1035_labels(name: str) -> None:
    for child, value in serve_children(ModelServeNames(name)).items():
        # A ConfigMap name may be a subdomain of 253; Service, Deployment and HPA names stay labels.
        limit = 253 if child == "config_map" else 63
        assert DNS_1035_LABEL.match(value) and len(value) <= limit, f"{child}: {value!r}"


@pytest.mark.parametrize(
    ("finetunejob", "modelserve"),
    [
        ("foo", "foo-workers"),  # the collision of issue 10: both rendered Service foo-workers
        ("foo", "foo-config"),
        ("foo", "foo-launcher"),
        ("foo", "foo-a1"),
        ("foo-vllm", "foo"),
        ("foo", "foo"),
        ("a" * 70, "a" * 54 + "-fc851df4"),  # a ModelServe named like a FineTuneJob's shortened Service
        ("x" * 56, "x" * 56),
    ],
)
def test_a_finetunejob_and_a_modelserve_never_render_the_same_object(
    finetunejob: str, modelserve: str
) -> None:
    assert not objects("FineTuneJob", finetunejob) & objects("ModelServe", modelserve)


# Names as the API server allows them for custom resources: DNS subdomains.
SUBDOMAIN = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,80}[a-z0-9])?\Z")


@settings(max_examples=400, deadline=None)
@given(first=SUBDOMAIN, second=SUBDOMAIN, first_kind=st.sampled_from(["FineTuneJob", "ModelServe"]))
def test_two_resources_never_share_a_child(first: str, second: str, first_kind: str) -> None:
    for second_kind in ("FineTuneJob", "ModelServe"):
        if (first_kind, first) == (second_kind, second):
            continue
        shared = objects(first_kind, first) & objects(second_kind, second)
        assert not shared, (first_kind, first, second_kind, second, shared)
