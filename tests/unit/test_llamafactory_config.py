"""kubetune.api.llamafactory: FineTuneJob `spec.config` checked against the pinned LLaMA-Factory release."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.api import llamafactory as lf
from kubetune.api.llamafactory import ConfigProblem, check_config, check_template

# Copies of the configs users bring today (tests/data/README.md says where they came from).
REFERENCE_DIR = Path(__file__).parents[1] / "data" / "reference"
REFERENCE_CONFIGS = sorted(REFERENCE_DIR.glob("*.yaml"))
DATA_FILE = Path(lf.__file__).parent / "data" / f"llamafactory-{lf.LLAMAFACTORY_VERSION}.json"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def only(problems: list[ConfigProblem]) -> ConfigProblem:
    assert len(problems) == 1, problems
    return problems[0]


# --- the data ------------------------------------------------------------------------------------------


def test_data_is_for_the_pinned_release() -> None:
    # The one data file is the pinned release's (`make trainer-args` regenerates it after a bump).
    data = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    assert data["version"] == lf.LLAMAFACTORY_VERSION
    assert data["generated_by"] == "scripts/gen_llamafactory_args.py"
    assert f'"llamafactory=={data["version"]}"' in PYPROJECT.read_text(encoding="utf-8")
    assert [p.name for p in DATA_FILE.parent.glob("llamafactory-*.json")] == [DATA_FILE.name]


def test_data_file_is_sorted_and_stable() -> None:
    text = DATA_FILE.read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    for key in ("arguments", "stages", "finetuning_types", "templates"):
        assert data[key] == sorted(set(data[key])), key


def test_release_sets() -> None:
    assert sorted(lf.STAGES) == ["dpo", "kto", "ppo", "pt", "rm", "sft"]
    assert sorted(lf.FINETUNING_TYPES) == ["freeze", "full", "lora", "oft"]
    assert {"qwen", "qwen3", "llama3", "mistral", "chatml", "default", "empty"} <= lf.TEMPLATES
    # Model, data, training (transformers' Seq2SeqTrainingArguments), finetuning and generating arguments.
    assert {"model_name_or_path", "cutoff_len", "learning_rate", "predict_with_generate", "lora_rank"} <= (
        lf.ARGUMENTS
    )
    assert {"max_new_tokens", "report_to", "adapter_name_or_path", "ddp_timeout"} <= lf.ARGUMENTS
    assert len(lf.ARGUMENTS) > 300


def test_owned_keys_are_real_arguments() -> None:
    # An owned key that the release does not have would be a stale entry (and a wrong message).
    assert set(lf.OWNED_KEYS) <= lf.ARGUMENTS


def test_aliases_point_at_real_arguments() -> None:
    assert set(lf._ALIASES.values()) <= lf.ARGUMENTS
    assert not set(lf._ALIASES) & lf.ARGUMENTS


def test_the_pure_core_does_not_import_the_trainer_side() -> None:
    code = (
        "import sys, kubetune.api.llamafactory as m; m.check_config({'lerning_rate': 1});"
        "print(sorted(n for n in ('llamafactory', 'torch', 'transformers', 'kopf', 'kubernetes')"
        " if n in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- configs that pass ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", REFERENCE_CONFIGS, ids=lambda p: p.name)
def test_reference_configs_pass_without_their_owned_keys(path: Path) -> None:
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    owned = {key for key in config if key in lf.OWNED_KEYS}
    assert {problem.key for problem in check_config(config)} == owned
    assert all(problem.reason == "OwnedArgument" for problem in check_config(config))
    assert check_config({key: value for key, value in config.items() if key not in owned}) == []


def test_reference_configs_were_found() -> None:
    assert len(REFERENCE_CONFIGS) >= 3


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"stage": "sft", "finetuning_type": "lora", "lora_rank": 8, "lora_target": "all"},
        {"stage": "dpo", "finetuning_type": "lora", "pref_beta": 0.1, "pref_loss": "sigmoid"},
        {"stage": "pt", "finetuning_type": "full", "bf16": True},
        {"stage": "kto", "finetuning_type": "freeze", "freeze_trainable_layers": 2},
        {"stage": "sft", "finetuning_type": "oft", "oft_rank": 8},
        {"stage": "sft", "quantization_bit": 4, "quantization_method": "bnb"},  # QLoRA
        {"adapter_name_or_path": "saves/lora/previous", "report_to": "none", "logging_steps": 5},
        {"ddp_timeout": 180000000, "ddp_find_unused_parameters": False, "ddp_backend": "nccl"},
    ],
    ids=lambda c: ",".join(c) or "empty",
)
def test_valid_configs(config: dict[str, Any]) -> None:
    assert check_config(config) == []


# --- unknown arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("lerning_rate", "learning_rate"),
        ("lora_rnak", "lora_rank"),
        ("lora_aplha", "lora_alpha"),
        ("per_device_batch_size", "per_device_train_batch_size"),
        ("per_device_train_batchsize", "per_device_train_batch_size"),
        ("num_epochs", "num_train_epochs"),
        ("num_train_epoch", "num_train_epochs"),
        ("cutof_len", "cutoff_len"),
        ("max_seq_length", "cutoff_len"),
        ("gradient_acumulation_steps", "gradient_accumulation_steps"),
        ("evaluation_strategy", "eval_strategy"),
        ("lora_r", "lora_rank"),
        ("lr", "learning_rate"),
        ("Learning-Rate", "learning_rate"),
        ("use_unslot", "use_unsloth"),
        ("finetune_type", "finetuning_type"),
        ("stages", "stage"),
    ],
)
def test_unknown_argument_gets_the_nearest_name(key: str, suggestion: str) -> None:
    problem = only(check_config({key: 1}))
    assert problem == ConfigProblem(
        field=f"spec.config.{key}",
        key=key,
        reason="UnknownArgument",
        message=f"unknown LLaMA-Factory argument `{key}`: did you mean `{suggestion}`?",
    )


def test_unknown_argument_without_anything_close() -> None:
    problem = only(check_config({"zzzz": 1}))
    assert problem.reason == "UnknownArgument"
    assert problem.message == (
        "unknown LLaMA-Factory argument `zzzz`: "
        "LLaMA-Factory 0.9.5 has no argument of that name or one close to it"
    )


def test_unknown_argument_near_an_owned_one_says_so() -> None:
    problem = only(check_config({"output_dirs": "x"}))
    assert problem.reason == "UnknownArgument"
    assert "did you mean `output_dir`?" in problem.message
    assert "spec.storage.path" in problem.message


# --- owned arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "instead"),
    [
        ("model_name_or_path", "spec.model.source"),
        ("model_revision", "spec.model.revision"),
        ("output_dir", "spec.storage.path"),
        ("dataset_dir", "spec.dataset.dir"),
        ("dataset", "spec.dataset.names"),
        ("eval_dataset", "spec.dataset.evalNames"),
        ("deepspeed", "spec.deepspeed"),
        ("template", "spec.model.template"),
        ("hf_hub_token", "spec.model.hubTokenSecret"),
        ("ms_hub_token", "spec.model.hubTokenSecret"),
        ("om_hub_token", "spec.model.hubTokenSecret"),
        ("hub_token", "spec.model.hubTokenSecret"),
        ("cache_dir", "spec.storage.modelCache"),
        ("overwrite_output_dir", "resumes from the newest one"),
        ("resume_from_checkpoint", "resumes from the newest checkpoint"),
        ("logging_dir", "spec.storage.path"),
        ("local_rank", "spec.resources.gpusPerNode"),
        ("master_addr", "rendezvous"),
        ("master_port", "rendezvous"),
        ("ray_num_workers", "spec.resources.nodes"),
        ("ray_init_kwargs", "torchrun, not Ray"),
    ],
)
def test_owned_argument_names_the_spec_field(key: str, instead: str) -> None:
    assert instead in lf.OWNED_KEYS[key]
    problem = only(check_config({key: {"any": ["value"]}}))  # the value of an owned key does not matter
    assert problem.field == f"spec.config.{key}"
    assert problem.key == key
    assert problem.reason == "OwnedArgument"
    assert problem.message.startswith(f"`{key}` is set by the operator and cannot be in spec.config: ")
    assert instead in problem.message
    assert "\n" not in problem.message


def test_owned_table_is_fully_tested() -> None:
    tested = {"model_name_or_path", "model_revision", "output_dir", "dataset_dir", "dataset", "eval_dataset"}
    tested |= {"deepspeed", "template", "hf_hub_token", "ms_hub_token", "om_hub_token", "hub_token"}
    tested |= {"cache_dir", "overwrite_output_dir", "resume_from_checkpoint", "logging_dir", "local_rank"}
    tested |= {"master_addr", "master_port", "ray_num_workers", "ray_init_kwargs"}
    assert set(lf.OWNED_KEYS) == tested


@pytest.mark.parametrize(
    "key", ["adapter_name_or_path", "report_to", "ddp_timeout", "ddp_backend", "run_name", "push_to_hub"]
)
def test_not_owned(key: str) -> None:
    assert key not in lf.OWNED_KEYS
    assert key in lf.ARGUMENTS


# --- values --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "suggestion"),
    [
        ("stage", "sfft", "sft"),
        ("stage", "SFT", "sft"),
        ("stage", "dpo2", "dpo"),
        ("finetuning_type", "qlora", "lora"),
        ("finetuning_type", "ful", "full"),
        ("finetuning_type", "frozen", "freeze"),
    ],
)
def test_bad_choice_gets_a_suggestion(key: str, value: str, suggestion: str) -> None:
    problem = only(check_config({key: value}))
    assert problem.field == f"spec.config.{key}"
    assert problem.reason == "InvalidValue"
    assert f"`{value}`" in problem.message
    assert problem.message.endswith(f"did you mean `{suggestion}`?")


def test_bad_choice_without_anything_close_lists_the_choices() -> None:
    problem = only(check_config({"stage": "grpo"}))
    assert problem.reason == "InvalidValue"
    assert problem.message == (
        "unknown stage `grpo` for `stage` in LLaMA-Factory 0.9.5: use one of dpo, kto, ppo, pt, rm, sft"
    )


@pytest.mark.parametrize(("key", "value"), [("stage", None), ("stage", 1), ("finetuning_type", ["lora"])])
def test_choice_of_the_wrong_type(key: str, value: Any) -> None:
    problem = only(check_config({key: value}))
    assert problem.reason == "InvalidType"
    assert problem.message.startswith(f"`{key}` must be a string, one of ")


@pytest.mark.parametrize(
    ("template", "suggestion"),
    [("qwen2.5", "qwen"), ("llama-3", "llama3"), ("mistrall", "mistral"), ("Qwen3", "qwen3")],
)
def test_bad_template_gets_a_suggestion(template: str, suggestion: str) -> None:
    problem = check_template(template)
    assert problem is not None
    assert problem.field == "spec.model.template"
    assert problem.key == "template"
    assert problem.reason == "InvalidValue"
    assert problem.message == (
        f"unknown template `{template}` for `template` in LLaMA-Factory 0.9.5: did you mean `{suggestion}`?"
    )


def test_template_checks() -> None:
    assert all(check_template(name) is None for name in lf.TEMPLATES)
    far = check_template("zzzzzz")
    assert far is not None and far.reason == "InvalidValue" and "121 templates" in far.message
    wrong = check_template(3, field="spec.x")
    assert wrong is not None and wrong.reason == "InvalidType" and wrong.field == "spec.x"


def test_template_in_config_is_owned_whatever_its_value() -> None:
    assert only(check_config({"template": "no-such-template"})).reason == "OwnedArgument"


# --- keys and ordering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [True, 1, None, 2.5])
def test_keys_must_be_strings(key: Any) -> None:
    problem = only(check_config({key: "x"}))
    assert problem.reason == "InvalidType"
    assert problem.key == str(key)
    assert problem.field == f"spec.config.{key}"
    assert "quote the key" in problem.message


def test_config_must_be_a_mapping() -> None:
    problem = only(check_config(["stage", "sft"]))  # type: ignore[arg-type]
    assert (problem.field, problem.reason) == ("spec.config", "InvalidType")


def test_problems_are_sorted_by_key_and_stable() -> None:
    config = {
        "stage": "sfft",
        "output_dir": "x",
        "lerning_rate": 1e-4,
        "lora_rank": 8,
        "dataset": "a,b",
        "finetuning_type": "qlora",
    }
    problems = check_config(config)
    assert [p.key for p in problems] == ["dataset", "finetuning_type", "lerning_rate", "output_dir", "stage"]
    assert [p.reason for p in problems] == [
        "OwnedArgument",
        "InvalidValue",
        "UnknownArgument",
        "OwnedArgument",
        "InvalidValue",
    ]
    assert check_config(dict(reversed(config.items()))) == problems


def test_problem_is_frozen() -> None:
    problem = only(check_config({"lerning_rate": 1}))
    with pytest.raises(AttributeError):
        problem.key = "x"  # type: ignore[misc]


# --- arguments transformers removed --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "where"),
    [
        ("fsdp_transformer_layer_cls_to_wrap", "fsdp_config: {transformer_layer_cls_to_wrap:"),
        ("fsdp_min_num_params", "fsdp_config: {min_num_params:"),
        ("per_gpu_train_batch_size", "per_device_train_batch_size"),
        ("no_cuda", "use_cpu"),
    ],
)
def test_a_removed_argument_says_where_it_moved(key: str, where: str) -> None:
    problem = only(check_config({key: "x"}))
    assert problem.reason == "UnknownArgument"
    assert "removed" in problem.message and where in problem.message


def test_moved_arguments_are_really_gone_and_point_at_real_ones() -> None:
    assert not set(lf.MOVED) & lf.ARGUMENTS
    assert {"fsdp_config", "per_device_train_batch_size", "use_cpu"} <= lf.ARGUMENTS
