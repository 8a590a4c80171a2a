"""`kubetune convert`: LLaMA-Factory configs as users bring them -> faithful FineTuneJobs."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import convert as cv
from kubetune.api import API_VERSION
from kubetune.api.common import CLAIM_MOUNT_PATH
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.llamafactory import OWNED_KEYS, check_config, check_template

# Copies of the configs users bring (tests/data/README.md says where each file came from).
REFERENCE = Path(__file__).parents[1] / "data" / "reference"
EXAMPLES = Path(__file__).parents[2] / "examples" / "finetune"
DATASET_INFO = json.loads((REFERENCE / "dataset_info.json").read_text(encoding="utf-8"))
TAKEN_OUT = set(OWNED_KEYS) | cv.CONVERTED_KEYS

# Every reference config, how it is converted, and the spec fields its owned keys must land in. An
# inference config has no `dataset`, so it converts only with the keys that make it a training run (as
# `llamafactory-cli train inference-lora.yaml dataset=identity stage=sft do_train=true`); as it is, it is
# refused with a message pointing at ModelServe (test_inference_config_alone_is_refused).
REFERENCE_CASES: dict[str, dict[str, Any]] = {
    "qwen2.5-7b-instruct-lora-sft.yaml": {
        "overrides": {},
        "args": {"nodes": 1, "gpus_per_node": 8, "claim_root": None},
        "model": {"source": "pvc://shared/data/models/Qwen2.5-7B-Instruct", "template": "qwen"},
        "dataset": {"names": ["alpaca_clue_train"], "dir": "data/dataset", "info": ["alpaca_clue_train"]},
        "storage": {"claim": "shared", "path": "data/experiment/Qwen2.5-7B-Instruct-lora-sft"},
        "dropped": ["overwrite_output_dir", "resume_from_checkpoint"],
    },
    "llama3-8b-chinese-chat-lora-sft.yaml": {
        "overrides": {},
        "args": {"nodes": 2, "gpus_per_node": 4, "claim_root": "/data"},
        "model": {"source": "pvc://shared/models/Llama3-8B-Chinese-Chat", "template": "llama3"},
        "dataset": {"names": ["fintech", "identity"], "dir": "data", "info": ["fintech", "identity"]},
        "storage": {"claim": "shared", "path": "saves/LLaMA3-8B-Chinese-Chat/lora/train_2024-05-25-20-27-47"},
        "dropped": [],
    },
    "inference-lora.yaml": {
        "overrides": {"dataset": "identity", "stage": "sft", "do_train": True},
        "args": {"nodes": 1, "gpus_per_node": 1, "claim_root": "/data"},
        "model": {"source": "pvc://shared/models/Qwen2-0.5B-Instruct", "template": "qwen"},
        "dataset": {"names": ["identity"], "dir": "data", "info": ["identity"]},
        "storage": {"claim": "shared"},
        "dropped": [],
        "adapter": f"{CLAIM_MOUNT_PATH}/saves/Qwen2-0.5B-Instruct/lora/train_2024-09-25-15-42-07",
    },
}

BASE: dict[str, Any] = {
    "model_name_or_path": "/data/models/m",
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "lora",
    "lora_rank": 8,
    "dataset": "identity",
    "template": "qwen",
    "output_dir": "saves/x",
}


def reference_config(file: str) -> dict[str, Any]:
    path = REFERENCE / file
    return cv.load_lf_config(path.read_text(encoding="utf-8"), source=str(path))


def run(config: dict[str, Any], **overrides: Any) -> cv.ConversionResult:
    args: dict[str, Any] = {
        "name": "job",
        "namespace": None,
        "nodes": 1,
        "gpus_per_node": 8,
        "claim": "shared",
        "claim_root": None,
        "dataset_info": DATASET_INFO,
        "dataset_info_source": "dataset_info.json",
    }
    args.update(overrides)
    return cv.convert(config, **args)


def problems_of(config: dict[str, Any], **overrides: Any) -> str:
    with pytest.raises(cv.ConversionError) as caught:
        run(config, **overrides)
    return str(caught.value)


def as_cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------------------
# The reference configs


def test_the_table_covers_every_reference_config() -> None:
    found = {p.name for p in REFERENCE.iterdir() if p.suffix in (".yaml", ".yml")}
    assert found, f"no reference configs in {REFERENCE}"
    assert found == set(REFERENCE_CASES)


@pytest.mark.parametrize("file", sorted(REFERENCE_CASES))
def test_reference_config_converts_faithfully(file: str) -> None:
    case = REFERENCE_CASES[file]
    original = reference_config(file)
    config = {**original, **case["overrides"]}
    result = run(config, **case["args"])
    spec = result.manifest["spec"]
    FineTuneJobSpec.model_validate(spec)
    assert check_config(spec["config"]) == []

    # Every key the operator does not own is in spec.config, unchanged, in the same order.
    kept = [key for key in config if key not in TAKEN_OUT]
    assert list(spec["config"]) == kept
    for key in kept:
        if key == "adapter_name_or_path":
            assert spec["config"][key] == case["adapter"]
            continue
        assert spec["config"][key] == config[key], key
        assert type(spec["config"][key]) is type(config[key]), key
    # ... and no owned key is left there.
    assert not set(spec["config"]) & TAKEN_OUT

    # The owned keys are in their spec fields.
    assert spec["model"] == case["model"]
    assert spec["dataset"]["names"] == case["dataset"]["names"]
    assert spec["dataset"]["dir"] == case["dataset"]["dir"]
    assert spec["dataset"]["info"] == {n: DATASET_INFO[n] for n in case["dataset"]["info"]}
    assert spec["storage"] == case["storage"]
    args = case["args"]
    assert spec["resources"] == {
        "nodes": args["nodes"],
        "gpusPerNode": args["gpus_per_node"],
        "gpuResource": "nvidia.com/gpu",
    }
    for key in case["dropped"]:
        assert any(note.startswith(key) or f", {key}" in note for note in result.notes), key


@pytest.mark.parametrize("file", sorted(REFERENCE_CASES))
def test_command_line_form_gives_the_same_manifest(file: str) -> None:
    case = REFERENCE_CASES[file]
    config = {**reference_config(file), **case["overrides"]}
    argv = ["llamafactory-cli", "train"]
    for key, value in config.items():
        argv += [f"--{key}", as_cli_value(value)]
    parsed = cv.parse_lf_args(argv)
    assert parsed == config
    assert run(parsed, **case["args"]).manifest == run(config, **case["args"]).manifest

    # `llamafactory-cli train x.yaml key=value ...`: the file, then OmegaConf overrides.
    overrides = [f"{key}={as_cli_value(value)}" for key, value in case["overrides"].items()]
    from_file = cv.parse_lf_args(["llamafactory-cli", "train", str(REFERENCE / file), *overrides])
    assert from_file == config
    assert list(from_file) == list(config)


@pytest.mark.parametrize("file", sorted(f for f, c in REFERENCE_CASES.items() if not c["overrides"]))
def test_main_gives_the_same_manifest_from_a_file_and_from_a_command_line(file: str, capsys) -> None:
    options = ["--nodes", "1", "--gpus-per-node", "8", "--claim", "shared", "--name", "same"]
    assert cv.main([str(REFERENCE / file), *options]) == 0
    from_file = capsys.readouterr().out
    assert cv.main([*options, "--", "llamafactory-cli", "train", str(REFERENCE / file)]) == 0
    assert capsys.readouterr().out == from_file
    argv = [f"--{key}={as_cli_value(value)}" for key, value in reference_config(file).items()]
    # No config file on this command line: dataset_info.json is searched from the current directory.
    assert (
        cv.main([*options, "--dataset-info", str(REFERENCE / "dataset_info.json"), "--", "train", *argv]) == 0
    )
    assert capsys.readouterr().out == from_file


def test_inference_config_alone_is_refused() -> None:
    with pytest.raises(cv.ConversionError) as caught:
        run(reference_config("inference-lora.yaml"))
    (message,) = caught.value.problems  # one message, not one per missing key
    assert "inference config" in message
    assert "ModelServe" in message


def test_main_end_to_end_on_a_reference_file(capsys) -> None:
    file = REFERENCE / "qwen2.5-7b-instruct-lora-sft.yaml"
    code = cv.main(
        [str(file), "--nodes", "1", "--gpus-per-node", "8", "--claim", "shared", "--namespace", "a"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    manifest = yaml.safe_load(out)
    assert list(manifest) == ["apiVersion", "kind", "metadata", "spec"]
    assert manifest["apiVersion"] == API_VERSION
    assert manifest["kind"] == "FineTuneJob"
    assert manifest["metadata"] == {"name": "qwen2-5-7b-instruct-lora-sft", "namespace": "a"}
    assert list(manifest["spec"]) == ["model", "dataset", "config", "resources", "storage"]
    spec = FineTuneJobSpec.model_validate(manifest["spec"])
    assert spec.config["learning_rate"] == 1.0e-4
    assert spec.dataset.info is not None and "alpaca_clue_train" in spec.dataset.info
    # Block style: no `{...}` or `[...]` flow collections.
    assert "{" not in out and "[" not in out
    lines = err.splitlines()
    assert lines and all(line.startswith("# ") for line in lines)
    assert any("overwrite_output_dir" in line for line in lines)
    # dataset_info.json is not in data/dataset/ beside the file: the one beside the file is used.
    assert any(str(REFERENCE / "dataset_info.json") in line for line in lines)


# ---------------------------------------------------------------------------------------------------------
# parse_lf_args


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--lora_rank", "8"], {"lora_rank": 8}),
        (["--lora_rank=8"], {"lora_rank": 8}),
        (["lora_rank=8"], {"lora_rank": 8}),
        (["--lora-rank", "8"], {"lora_rank": 8}),
        (["--lora_target", "q_proj,v_proj"], {"lora_target": "q_proj,v_proj"}),
        (["--dataset", "fintech,identity"], {"dataset": "fintech,identity"}),
        (["--learning_rate", "1e-4"], {"learning_rate": 1e-4}),
        (["--learning_rate", "1.0e-4"], {"learning_rate": 1e-4}),
        (["--num_train_epochs", "3.0"], {"num_train_epochs": 3.0}),
        (["--do_train"], {"do_train": True}),
        (["--do_train", "--fp16", "false"], {"do_train": True, "fp16": False}),
        (["--bf16", "True"], {"bf16": True}),
        (["--resume_from_checkpoint", "null"], {"resume_from_checkpoint": None}),
        (["--report_to", "none"], {"report_to": "none"}),
        (["--run_name", "2024-05-25"], {"run_name": "2024-05-25"}),
        (["--lora_dropout", "0"], {"lora_dropout": 0}),
        (["--warmup_ratio=0.1", "--flash_attn", "auto"], {"warmup_ratio": 0.1, "flash_attn": "auto"}),
        (["train", "--stage", "sft"], {"stage": "sft"}),
        (["llamafactory-cli", "train", "--stage", "sft"], {"stage": "sft"}),
        (["/usr/bin/llamafactory-cli", "train", "--stage=sft"], {"stage": "sft"}),
        (["FORCE_TORCHRUN=1", "NNODES=2", "llamafactory-cli", "train", "--stage", "sft"], {"stage": "sft"}),
        (["--stage", "sft", "--stage", "pt"], {"stage": "pt"}),
        ([], {}),
    ],
)
def test_parse_lf_args(argv: list[str], expected: dict[str, Any]) -> None:
    parsed = cv.parse_lf_args(argv)
    assert parsed == expected
    for key, value in expected.items():
        assert type(parsed[key]) is type(value)


def test_parse_lf_args_file_then_overrides_keeps_the_file_order(tmp_path: Path) -> None:
    file = tmp_path / "x.yaml"
    file.write_text("model_name_or_path: /m\nlora_rank: 8\nlearning_rate: 1e-4\ntemplate: qwen\n")
    parsed = cv.parse_lf_args(["llamafactory-cli", "train", str(file), "lora_rank=16", "new_key=[1, 2]"])
    assert parsed == {
        "model_name_or_path": "/m",
        "lora_rank": 16,
        "learning_rate": 1e-4,
        "template": "qwen",
        "new_key": [1, 2],
    }
    assert list(parsed) == ["model_name_or_path", "lora_rank", "learning_rate", "template", "new_key"]


@pytest.mark.parametrize(
    "argv",
    [
        ["llamafactory-cli", "chat", "x.yaml"],
        ["llamafactory-cli"],
        ["stray"],
        ["--lora_rank", "8", "stray"],
        ["train", "missing-file.yaml"],
    ],
)
def test_parse_lf_args_refuses(argv: list[str]) -> None:
    with pytest.raises(cv.ConversionError):
        cv.parse_lf_args(argv)


# ---------------------------------------------------------------------------------------------------------
# The mapping rules


@pytest.mark.parametrize(
    ("value", "hub"),
    [
        ("Qwen/Qwen2.5-7B-Instruct", True),
        ("meta-llama/Meta-Llama-3-8B", True),
        ("shenzhi-wang/Llama3-8B-Chinese-Chat", True),
        ("org_1/name.v2", True),
        ("models/qwen", True),  # two parts: a hub id; write ./models/qwen for a directory
        ("/data/models/Qwen2.5-7B-Instruct", False),
        ("./models/qwen", False),
        ("../models/qwen", False),
        ("~/models/qwen", False),
        ("models/qwen/7b", False),
        ("qwen7b", False),
        ("org/", False),
        ("/org", False),
        (".hidden/name", False),
        ("org/name with space", False),
    ],
)
def test_hub_id_rule(value: str, hub: bool) -> None:
    assert cv.is_hub_id(value) is hub


@pytest.mark.parametrize(
    ("model", "extra", "claim_root", "source"),
    [
        ("Qwen/Qwen2.5-7B-Instruct", {}, None, "hf://Qwen/Qwen2.5-7B-Instruct"),
        ("Qwen/Qwen2.5-7B-Instruct", {"use_modelscope_hub": True}, None, "ms://Qwen/Qwen2.5-7B-Instruct"),
        ("Qwen/Qwen2.5-7B-Instruct", {"use_modelscope_hub": False}, None, "hf://Qwen/Qwen2.5-7B-Instruct"),
        ("/data/models/Qwen2.5-7B-Instruct", {}, None, "pvc://shared/data/models/Qwen2.5-7B-Instruct"),
        ("/data/models/Qwen2.5-7B-Instruct", {}, "/data", "pvc://shared/models/Qwen2.5-7B-Instruct"),
        ("/data/models/Qwen2.5-7B-Instruct/", {}, "/data/", "pvc://shared/models/Qwen2.5-7B-Instruct"),
        ("/data/models/../models/m", {}, "/data", "pvc://shared/models/m"),
        ("models/qwen/7b", {}, "/data", "pvc://shared/models/qwen/7b"),
        ("./models/qwen", {}, None, "pvc://shared/models/qwen"),
        ("qwen7b", {}, None, "pvc://shared/qwen7b"),
    ],
)
def test_model_source(model: str, extra: dict[str, Any], claim_root: str | None, source: str) -> None:
    result = run({**BASE, "model_name_or_path": model, **extra}, claim_root=claim_root)
    assert result.manifest["spec"]["model"]["source"] == source
    assert "model_name_or_path" not in result.manifest["spec"]["config"]
    assert any(model in note for note in result.notes)
    # Not a LLaMA-Factory argument (LLaMA-Factory reads USE_MODELSCOPE_HUB): the scheme carries it.
    assert "use_modelscope_hub" not in result.manifest["spec"]["config"]


def test_modelscope_from_the_environment_of_the_command_line() -> None:
    argv = ["USE_MODELSCOPE_HUB=1", "llamafactory-cli", "train", "--model_name_or_path", "qwen/Qwen2.5-7B"]
    config = cv.parse_lf_args(argv)
    assert config["use_modelscope_hub"] is True
    result = run({**BASE, **config})
    assert result.manifest["spec"]["model"]["source"] == "ms://qwen/Qwen2.5-7B"
    local = run({**BASE, "use_modelscope_hub": True})
    assert local.manifest["spec"]["model"]["source"] == "pvc://shared/data/models/m"
    assert "use_modelscope_hub" not in local.manifest["spec"]["config"]
    assert any(note.startswith("use_modelscope_hub dropped") for note in local.notes)


def test_hub_model_revision_goes_to_the_spec() -> None:
    result = run({**BASE, "model_name_or_path": "Qwen/Qwen2.5-7B", "model_revision": "v1.0"})
    assert result.manifest["spec"]["model"]["revision"] == "v1.0"
    assert "model_revision" not in result.manifest["spec"]["config"]


@pytest.mark.parametrize(
    ("model", "claim_root", "expected"),
    [
        ("/other/models/m", "/data", "outside the claim root `/data`"),
        ("../models/m", None, "leaves the directory"),
        ("~/models/m", None, "home directory"),
        ("/data", "/data", "claim's root"),
        ("/data/models/m", "data", "must be an absolute path"),
        ("", None, "`model_name_or_path` is missing"),
    ],
)
def test_model_paths_that_cannot_be_on_the_claim(model: str, claim_root: str | None, expected: str) -> None:
    assert expected in problems_of({**BASE, "model_name_or_path": model}, claim_root=claim_root)


def test_openmind_hub_is_refused() -> None:
    config = cv.parse_lf_args(["USE_OPENMIND_HUB=1", "train", "--model_name_or_path", "Qwen/Qwen2.5-7B"])
    assert "OpenMind" in problems_of({**BASE, **config})


@pytest.mark.parametrize(("file", "preset"), sorted(cv.DEEPSPEED_PRESETS.items()))
@pytest.mark.parametrize("folder", ["", "examples/deepspeed/", "/opt/LLaMA-Factory/examples/deepspeed/"])
def test_deepspeed_example_files_become_presets(file: str, preset: str, folder: str) -> None:
    result = run({**BASE, "deepspeed": folder + file})
    assert result.manifest["spec"]["deepspeed"] == {"preset": preset}
    assert "deepspeed" not in result.manifest["spec"]["config"]
    assert any(preset in note and file in note for note in result.notes)


@pytest.mark.parametrize("value", ["ds_config.json", "examples/deepspeed/ds_z3_custom.json"])
def test_a_deepspeed_file_that_cannot_be_read_is_refused_with_the_way_out(value: Any) -> None:
    message = problems_of({**BASE, "deepspeed": value}, found=cv.Found(searched=["/here"]))
    assert f"cannot read `deepspeed: {value}` (not found in /here)" in message
    assert "deepspeed: {configMapRef:" in message


def test_no_deepspeed_no_deepspeed_field() -> None:
    result = run({**BASE, "deepspeed": None})
    assert "deepspeed" not in result.manifest["spec"]
    assert "deepspeed" not in result.manifest["spec"]["config"]


@pytest.mark.parametrize(
    ("dataset", "eval_dataset", "names", "eval_names"),
    [
        ("identity", None, ["identity"], None),
        ("fintech, identity", None, ["fintech", "identity"], None),
        (["fintech", "identity"], None, ["fintech", "identity"], None),
        ("fintech", "identity", ["fintech"], ["identity"]),
        ("fintech", ["identity", "fintech"], ["fintech"], ["identity", "fintech"]),
    ],
)
def test_dataset_names_and_their_entries(
    dataset: Any, eval_dataset: Any, names: list[str], eval_names: list[str] | None
) -> None:
    config = {**BASE, "dataset": dataset}
    if eval_dataset is not None:
        config["eval_dataset"] = eval_dataset
    spec = run(config).manifest["spec"]
    assert spec["dataset"]["names"] == names
    assert spec["dataset"].get("evalNames") == eval_names
    used = dict.fromkeys([*names, *(eval_names or [])])
    assert spec["dataset"]["info"] == {name: DATASET_INFO[name] for name in used}
    assert not {"dataset", "eval_dataset"} & set(spec["config"])


@pytest.mark.parametrize("key", ["dataset", "eval_dataset"])
def test_missing_dataset_entry_names_the_dataset_and_the_file(key: str) -> None:
    message = problems_of({**BASE, key: "identity,no_such_data"}, dataset_info_source="/x/dataset_info.json")
    assert "`no_such_data`" in message
    assert "/x/dataset_info.json" in message
    assert "did you mean `fintech`" in problems_of({**BASE, "dataset": "fintec"})


def test_without_dataset_info_the_spec_reads_a_config_map() -> None:
    result = run({**BASE, "dataset": "a,b"}, name="ner", namespace="team-a", dataset_info=None)
    dataset = result.manifest["spec"]["dataset"]
    assert dataset["configMapRef"] == {"name": "ner-dataset-info", "key": "dataset_info.json"}
    assert "info" not in dataset
    FineTuneJobSpec.model_validate(result.manifest["spec"])
    note = next(n for n in result.notes if "configmap" in n)
    assert "kubectl create configmap ner-dataset-info -n team-a --from-file=dataset_info.json=" in note


@pytest.mark.parametrize(
    ("dataset_dir", "claim_root", "expected"),
    [
        (None, None, "data"),
        ("data", None, "data"),
        ("data/dataset", "/data", "data/dataset"),
        ("/data/datasets/clue", "/data", "datasets/clue"),
        ("/data/datasets/clue", None, "data/datasets/clue"),
        ("./datasets/", None, "datasets"),
    ],
)
def test_dataset_dir_on_the_claim(dataset_dir: str | None, claim_root: str | None, expected: str) -> None:
    config = dict(BASE)
    if dataset_dir is not None:
        config["dataset_dir"] = dataset_dir
    result = run(config, claim_root=claim_root)
    assert result.manifest["spec"]["dataset"]["dir"] == expected
    assert "dataset_dir" not in result.manifest["spec"]["config"]
    if dataset_dir is None:
        assert any("dataset_dir is not set" in note for note in result.notes)


def test_online_dataset_dir_is_refused() -> None:
    assert "ONLINE" in problems_of({**BASE, "dataset_dir": "ONLINE"})


@pytest.mark.parametrize(
    ("output_dir", "claim_root", "path"),
    [
        ("saves/qwen/lora", None, "saves/qwen/lora"),
        ("saves/qwen/lora/", "/data", "saves/qwen/lora"),
        ("/data/saves/qwen", "/data", "saves/qwen"),
        ("/data/saves/qwen", None, "data/saves/qwen"),
        (None, None, None),
    ],
)
def test_output_dir_becomes_storage_path(
    output_dir: str | None, claim_root: str | None, path: str | None
) -> None:
    config = {k: v for k, v in BASE.items() if k != "output_dir"}
    if output_dir is not None:
        config["output_dir"] = output_dir
    result = run(config, claim_root=claim_root)
    storage = result.manifest["spec"]["storage"]
    assert storage.get("path") == path
    assert storage["claim"] == "shared"
    assert "output_dir" not in result.manifest["spec"]["config"]
    if output_dir is None:
        assert any("runs/<namespace>/job" in note for note in result.notes)


@pytest.mark.parametrize(
    ("key", "value", "mentions"),
    [
        ("overwrite_output_dir", True, "newest checkpoint"),
        ("resume_from_checkpoint", None, "newest checkpoint"),
        ("resume_from_checkpoint", "saves/x/checkpoint-500", "saves/x/checkpoint-500"),
        ("cache_dir", "/root/.cache", "model cache"),
        ("logging_dir", "/tmp/logs", "report_to"),
        ("local_rank", 0, "torchrun"),
        ("master_port", 29500, "rendezvous"),
    ],
)
def test_dropped_keys_are_noted(key: str, value: Any, mentions: str) -> None:
    result = run({**BASE, key: value})
    assert key not in result.manifest["spec"]["config"]
    assert any(key in note and mentions in note for note in result.notes)


TOKENS = {
    "hf_hub_token": "hf_SeCrEtHuGgInGfAcE",
    "ms_hub_token": "ms-SeCrEtMoDeLsCoPe",
    "om_hub_token": "om-SeCrEtOpEnMiNd",
    "hub_token": "hf_SeCrEtPuShToKeN",
}


@pytest.mark.parametrize("model", ["Qwen/Qwen2.5-7B-Instruct", "/data/models/m"])
def test_tokens_are_dropped_and_never_written_anywhere(model: str) -> None:
    result = run({**BASE, "model_name_or_path": model, **TOKENS})
    everything = cv.to_yaml(result.manifest) + "\n".join(result.notes)
    for key, token in TOKENS.items():
        assert token not in everything
        assert key not in result.manifest["spec"]["config"]
    assert any("model.hubTokenSecret" in note for note in result.notes)
    secret = result.manifest["spec"]["model"].get("hubTokenSecret")
    if model.startswith("/"):
        assert secret is None  # nothing to download
    else:
        assert secret == {"name": "job-hub-token", "key": "token"}
        FineTuneJobSpec.model_validate(result.manifest["spec"])


def test_tokens_never_reach_stdout_or_stderr(tmp_path: Path, capsys) -> None:
    file = tmp_path / "gated.yaml"
    file.write_text(yaml.safe_dump({**BASE, "model_name_or_path": "meta-llama/Meta-Llama-3-8B", **TOKENS}))
    (tmp_path / "dataset_info.json").write_text(json.dumps(DATASET_INFO))
    assert cv.main([str(file), "--nodes", "1", "--gpus-per-node", "1", "--claim", "shared"]) == 0
    out, err = capsys.readouterr()
    for token in TOKENS.values():
        assert token not in out
        assert token not in err


@pytest.mark.parametrize(
    ("adapters", "claim_root", "expected"),
    [
        ("/data/saves/a", "/data", f"{CLAIM_MOUNT_PATH}/saves/a"),
        ("/data/saves/a", None, f"{CLAIM_MOUNT_PATH}/data/saves/a"),
        ("saves/lora/a,./b", None, f"{CLAIM_MOUNT_PATH}/saves/lora/a,{CLAIM_MOUNT_PATH}/b"),
        ("org/adapter", None, "org/adapter"),
        (f"{CLAIM_MOUNT_PATH}/saves/a", "/data", f"{CLAIM_MOUNT_PATH}/saves/a"),
    ],
)
def test_adapter_paths_are_mapped_onto_the_mounted_claim(
    adapters: str, claim_root: str | None, expected: str
) -> None:
    config = {**BASE, "adapter_name_or_path": adapters}
    result = run(config, claim_root=claim_root)
    assert result.manifest["spec"]["config"]["adapter_name_or_path"] == expected
    assert list(result.manifest["spec"]["config"]) == [k for k in config if k not in TAKEN_OUT]
    assert any("adapter_name_or_path" in note for note in result.notes) is (adapters != expected)


def test_template_is_optional_and_checked_when_given() -> None:
    # LLaMA-Factory 0.9.5 takes the tokenizer's chat template without one, else `empty`.
    result = run({k: v for k, v in BASE.items() if k != "template"})
    assert "template" not in result.manifest["spec"]["model"]
    assert any("template is not set" in note and "tokenizer" in note for note in result.notes)
    assert "qwenn" in problems_of({**BASE, "template": "qwenn"})


def test_config_problems_are_surfaced_together() -> None:
    config = {**BASE, "template": "qwenn"}
    config.update(lerning_rate=1e-4, deepspeed="mine.json")
    with pytest.raises(cv.ConversionError) as caught:
        run(config)
    problems = caught.value.problems
    assert any("qwenn" in p for p in problems)
    assert any("did you mean `learning_rate`" in p for p in problems)
    assert any("mine.json" in p for p in problems)


@pytest.mark.parametrize("name", ["Bad_Name", "", "-x"])
def test_invalid_names_are_refused(name: str) -> None:
    assert "name" in problems_of(BASE, name=name)


def test_manifest_shape_and_order() -> None:
    result = run({**BASE, "deepspeed": "ds_z3_config.json"}, namespace="team-a", gpu_resource="amd.com/gpu")
    manifest = result.manifest
    assert list(manifest) == ["apiVersion", "kind", "metadata", "spec"]
    assert manifest["metadata"] == {"name": "job", "namespace": "team-a"}
    assert list(manifest["spec"]) == ["model", "dataset", "config", "resources", "deepspeed", "storage"]
    assert manifest["spec"]["resources"] == {"nodes": 1, "gpusPerNode": 8, "gpuResource": "amd.com/gpu"}
    assert "namespace" not in run(BASE).manifest["metadata"]


def test_yaml_round_trip_keeps_types() -> None:
    config = cv.load_lf_config("learning_rate: 1e-4\nrun_name: 2024-05-25\nlora_target: q_proj,v_proj\n")
    assert config == {"learning_rate": 1e-4, "run_name": "2024-05-25", "lora_target": "q_proj,v_proj"}
    manifest = run({**BASE, **config}).manifest
    assert yaml.safe_load(cv.to_yaml(manifest)) == manifest


# ---------------------------------------------------------------------------------------------------------
# The command


@pytest.mark.parametrize(
    ("config", "file", "expected"),
    [
        # The file's stem first: 33 of LLaMA-Factory's 43 examples write to `.../sft`.
        (
            {"output_dir": "saves/llama3-8b/lora/sft"},
            "examples/train_lora/llama3_lora_sft.yaml",
            "llama3-lora-sft",
        ),
        ({"output_dir": "saves/Qwen2.5-7B/lora/train_2024-05-25"}, None, "train-2024-05-25"),
        ({"output_dir": "saves/run/"}, "___.yaml", "run"),
        ({}, "/a/Qwen2.5-7B_LoRA.yaml", "qwen2-5-7b-lora"),
        ({"output_dir": "___"}, "my-run.yml", "my-run"),
        ({}, "x" * 80 + ".yaml", "x" * 63),
        ({}, None, ""),
    ],
)
def test_default_name(config: dict[str, Any], file: str | None, expected: str) -> None:
    assert cv.default_name(config, file) == expected


def test_main_reads_stdin(monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(BASE)))
    assert (
        cv.main(["-", "--nodes", "1", "--gpus-per-node", "1", "--claim", "c", "--claim-root", "/data"]) == 0
    )
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert manifest["metadata"]["name"] == "x"  # output_dir saves/x
    assert manifest["spec"]["model"]["source"] == "pvc://c/models/m"


def test_main_finds_dataset_info_in_dataset_dir_first(tmp_path: Path, capsys) -> None:
    (tmp_path / "mydata").mkdir()
    (tmp_path / "mydata" / "dataset_info.json").write_text(
        json.dumps({"identity": {"file_name": "mine.json"}})
    )
    (tmp_path / "dataset_info.json").write_text(json.dumps(DATASET_INFO))
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump({**BASE, "dataset_dir": "mydata"}))
    assert cv.main([str(file), "--nodes", "1", "--gpus-per-node", "1", "--claim", "c"]) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert manifest["spec"]["dataset"]["info"] == {"identity": {"file_name": "mine.json"}}


def test_main_without_dataset_info_uses_a_config_map(tmp_path: Path, capsys) -> None:
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump(BASE))
    assert cv.main([str(file), "--nodes", "1", "--gpus-per-node", "1", "--claim", "c", "--name", "r"]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["spec"]["dataset"]["configMapRef"]["name"] == "r-dataset-info"
    assert "searched" in err and str(tmp_path / "data" / "dataset_info.json") in err
    assert "kubectl create configmap r-dataset-info" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([str(REFERENCE / "inference-lora.yaml")], "ModelServe"),
        (["/no/such/config.yaml"], "cannot read"),
        ([], "give a LLaMA-Factory config FILE"),
        ([str(REFERENCE / "inference-lora.yaml"), "--", "--stage", "sft"], "not both"),
        (
            [str(REFERENCE / "llama3-8b-chinese-chat-lora-sft.yaml"), "--dataset-info", "/no/such.json"],
            "cannot read",
        ),
        (["--", "--stage", "sft", "--template", "qwen"], "give --name"),
        (["--", "llamafactory-cli", "export", "x.yaml"], "llamafactory-cli train"),
    ],
)
def test_main_errors_exit_2(argv: list[str], expected: str, capsys) -> None:
    options = ["--nodes", "1", "--gpus-per-node", "1", "--claim", "shared"]
    split = argv.index("--") if "--" in argv else len(argv)
    assert cv.main([*argv[:split], *options, *argv[split:]]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ")
    assert expected in err


@pytest.mark.parametrize(
    "argv",
    [
        ["x.yaml", "--gpus-per-node", "1", "--claim", "c"],
        ["x.yaml", "--nodes", "0", "--gpus-per-node", "1", "--claim", "c"],
        ["x.yaml", "--nodes", "one", "--gpus-per-node", "1", "--claim", "c"],
    ],
)
def test_main_usage_errors_exit_2(argv: list[str], capsys) -> None:
    assert cv.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_main_help(capsys) -> None:
    assert cv.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "kubetune convert" in out and "--claim-root" in out
    assert cv.build_parser(prog="x").prog == "x"


# ---------------------------------------------------------------------------------------------------------
# The examples


EXPECTED_EXAMPLES = {
    "qwen2.5-7b-ner-lora.yaml",
    "llama3-8b-lora-two-datasets.yaml",
    "qwen2.5-7b-full-zero3-2x8.yaml",
}


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


def test_the_examples_are_there() -> None:
    assert {p.name for p in example_files()} >= EXPECTED_EXAMPLES


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_example_is_a_valid_finetunejob(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), "an example starts with a comment saying what it is and what it expects"
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert docs
    for doc in docs:
        assert doc["apiVersion"] == API_VERSION
        assert doc["kind"] == "FineTuneJob"
        assert cv.readable_name(doc["metadata"]["name"]) == doc["metadata"]["name"]
        spec = FineTuneJobSpec.model_validate(doc["spec"])
        assert check_config(spec.config) == []
        assert check_template(spec.model.template) is None


@pytest.mark.parametrize(
    ("example", "reference", "args", "overrides"),
    [
        (
            "qwen2.5-7b-ner-lora.yaml",
            "qwen2.5-7b-instruct-lora-sft.yaml",
            {"nodes": 1, "gpus_per_node": 8},
            {"deepspeed": "examples/deepspeed/ds_z2_config.json"},
        ),
        (
            "llama3-8b-lora-two-datasets.yaml",
            "llama3-8b-chinese-chat-lora-sft.yaml",
            {"nodes": 1, "gpus_per_node": 1},
            {},
        ),
    ],
)
def test_example_is_its_reference_config_converted(
    example: str, reference: str, args: dict[str, Any], overrides: dict[str, Any]
) -> None:
    doc = yaml.safe_load((EXAMPLES / example).read_text(encoding="utf-8"))
    name = doc["metadata"]["name"]
    result = run({**reference_config(reference), **overrides}, name=name, claim_root="/data", **args)
    converted = result.manifest["spec"]
    assert {k: v for k, v in doc["spec"].items() if k in converted} == converted
    assert set(doc["spec"]) - set(converted) <= {"maxRestarts"}


# ---------------------------------------------------------------------------------------------------------
# Files as LLaMA-Factory finds them: DeepSpeed by content, local models by looking, dataset_info.json

LF_EXAMPLES = Path(__file__).parents[1] / "data" / "llamafactory" / "examples"
OPTIONS = ["--nodes", "2", "--gpus-per-node", "8", "--claim", "shared"]


def converted(argv: list[str], capsys) -> tuple[list[dict[str, Any]], str]:
    code = cv.main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return [doc for doc in yaml.safe_load_all(out) if doc], err


def training_config(tmp_path: Path, **changes: Any) -> Path:
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump({**BASE, **changes}), encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps(DATASET_INFO), encoding="utf-8")
    return file


@pytest.mark.parametrize("preset", ["zero0", "zero2", "zero2-offload", "zero3", "zero3-offload"])
def test_a_deepspeed_file_equal_to_a_preset_becomes_it_whatever_its_name(
    preset: str, tmp_path: Path, capsys
) -> None:
    from kubetune.render.deepspeed import preset_config

    (tmp_path / "my_zero.json").write_text(json.dumps(preset_config(preset), indent=2), encoding="utf-8")
    file = training_config(tmp_path, deepspeed="my_zero.json")
    (manifest,), err = converted([str(file), *OPTIONS], capsys)
    assert manifest["spec"]["deepspeed"] == {"preset": preset}
    assert f"equals preset {preset} key by key" in err


def test_llamafactorys_ds_z3_config_is_the_zero3_preset_by_content(tmp_path: Path, capsys) -> None:
    # 1e9 in the file, 1000000000 in the preset: equal numbers.
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "z3.json").write_bytes((LF_EXAMPLES / "deepspeed" / "ds_z3_config.json").read_bytes())
    file = training_config(tmp_path, deepspeed="ds/z3.json")
    (manifest,), _ = converted([str(file), *OPTIONS], capsys)
    assert manifest["spec"]["deepspeed"] == {"preset": "zero3"}


@pytest.mark.parametrize("example", ["ds_z3_fp8_config.json", "ds_z2_autotp_config.json"])
def test_other_deepspeed_files_go_into_a_configmap_before_the_job(
    example: str, tmp_path: Path, capsys
) -> None:
    text = (LF_EXAMPLES / "deepspeed" / example).read_text(encoding="utf-8")
    (tmp_path / example).write_text(text, encoding="utf-8")
    file = training_config(tmp_path, deepspeed=example)
    docs, err = converted([str(file), *OPTIONS, "--name", "fp8", "--namespace", "team-a"], capsys)
    config_map, job = docs
    assert config_map == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "fp8-deepspeed", "namespace": "team-a"},
        "data": {"deepspeed.json": text if text.endswith("\n") else text + "\n"},
    }
    assert job["kind"] == "FineTuneJob"
    assert job["spec"]["deepspeed"] == {"configMapRef": {"name": "fp8-deepspeed", "key": "deepspeed.json"}}
    assert "none of the presets" in err and "is not one of LLaMA-Factory's example files" not in err


def test_a_file_named_like_an_example_is_still_taken_by_its_content(tmp_path: Path, capsys) -> None:
    # Not by name: an edited copy of ds_z3_config.json is not the zero3 preset.
    content = json.loads((LF_EXAMPLES / "deepspeed" / "ds_z3_config.json").read_text(encoding="utf-8"))
    content["zero_optimization"]["overlap_comm"] = True
    (tmp_path / "ds_z3_config.json").write_text(json.dumps(content), encoding="utf-8")
    file = training_config(tmp_path, deepspeed="ds_z3_config.json")
    (config_map, job), _ = converted([str(file), *OPTIONS, "--name", "z3"], capsys)
    assert json.loads(config_map["data"]["deepspeed.json"]) == content
    assert "configMapRef" in job["spec"]["deepspeed"]


def test_the_deepspeed_file_is_looked_for_beside_the_config_then_in_the_working_directory(
    tmp_path: Path, capsys
) -> None:
    configs, work = tmp_path / "configs", tmp_path / "LLaMA-Factory"
    (work / "examples" / "deepspeed").mkdir(parents=True)
    configs.mkdir()
    fp8 = LF_EXAMPLES / "deepspeed" / "ds_z3_fp8_config.json"
    (work / "examples" / "deepspeed" / fp8.name).write_bytes(fp8.read_bytes())
    file = training_config(configs, deepspeed=f"examples/deepspeed/{fp8.name}")
    argv = [str(file), *OPTIONS, "--working-dir", str(work)]
    (config_map, _), err = converted(argv, capsys)
    assert json.loads(config_map["data"]["deepspeed.json"]) == json.loads(fp8.read_text(encoding="utf-8"))
    assert str(work / "examples" / "deepspeed" / fp8.name) in err
    # Beside the config wins.
    (configs / "examples" / "deepspeed").mkdir(parents=True)
    from kubetune.render.deepspeed import preset_config

    (configs / "examples" / "deepspeed" / fp8.name).write_text(json.dumps(preset_config("zero2")))
    (job,), _ = converted(argv, capsys)
    assert job["spec"]["deepspeed"] == {"preset": "zero2"}


def test_a_deepspeed_file_that_is_not_json_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "ds.json").write_text("{not json", encoding="utf-8")
    file = training_config(tmp_path, deepspeed="ds.json")
    assert cv.main([str(file), *OPTIONS]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_an_inline_deepspeed_config_goes_into_a_configmap() -> None:
    result = run({**BASE, "deepspeed": {"train_batch_size": 8, "zero_optimization": {"stage": 1}}})
    (config_map,) = result.before
    assert json.loads(config_map["data"]["deepspeed.json"])["zero_optimization"] == {"stage": 1}
    assert result.manifest["spec"]["deepspeed"]["configMapRef"]["name"] == "job-deepspeed"
    assert result.manifests == [config_map, result.manifest]


def test_the_multi_document_output_validates_and_renders(tmp_path: Path, capsys) -> None:
    from kubetune.cli import main as kubetune

    fp8 = LF_EXAMPLES / "deepspeed" / "ds_z3_fp8_config.json"
    (tmp_path / fp8.name).write_bytes(fp8.read_bytes())
    file = training_config(tmp_path, deepspeed=fp8.name)
    assert cv.main([str(file), *OPTIONS, "--name", "fp8"]) == 0
    out = tmp_path / "ftj.yaml"
    out.write_text(capsys.readouterr().out, encoding="utf-8")
    assert kubetune(["validate", str(out)]) == 0
    assert kubetune(["render", str(out)]) == 0
    children = list(yaml.safe_load_all(capsys.readouterr().out))
    config_map = next(c for c in children if c["kind"] == "ConfigMap")
    assert json.loads(config_map["data"]["deepspeed.json"]) == json.loads(fp8.read_text(encoding="utf-8"))


@pytest.mark.parametrize("where", ["beside-the-config", "working-dir"])
def test_a_two_part_model_path_that_exists_is_a_model_on_the_claim(
    where: str, tmp_path: Path, capsys
) -> None:
    configs, work = tmp_path / "configs", tmp_path / "work"
    configs.mkdir()
    (configs if where == "beside-the-config" else work).joinpath("models", "qwen").mkdir(parents=True)
    file = training_config(configs, model_name_or_path="models/qwen")
    (manifest,), err = converted([str(file), *OPTIONS, "--working-dir", str(work)], capsys)
    assert manifest["spec"]["model"]["source"] == "pvc://shared/models/qwen"
    assert "is a directory here" in err


def test_a_two_part_id_that_does_not_exist_stays_a_hub_id_and_says_so(tmp_path: Path, capsys) -> None:
    file = training_config(tmp_path, model_name_or_path="Qwen/Qwen3-4B")
    (manifest,), err = converted([str(file), *OPTIONS, "--working-dir", str(tmp_path)], capsys)
    assert manifest["spec"]["model"]["source"] == "hf://Qwen/Qwen3-4B"
    assert f"no directory `Qwen/Qwen3-4B` in {tmp_path}" in err and "hub id" in err


def test_adapters_are_looked_up_the_same_way(tmp_path: Path, capsys) -> None:
    (tmp_path / "saves" / "lora").mkdir(parents=True)
    file = training_config(tmp_path, adapter_name_or_path="saves/lora,org/adapter")
    (manifest,), err = converted([str(file), *OPTIONS, "--working-dir", str(tmp_path)], capsys)
    assert manifest["spec"]["config"]["adapter_name_or_path"] == f"{CLAIM_MOUNT_PATH}/saves/lora,org/adapter"
    assert "adapter_name_or_path `org/adapter`: no directory" in err


def test_the_working_directory_inside_the_claim_root_becomes_storage_working_dir(
    tmp_path: Path, capsys
) -> None:
    work = tmp_path / "LLaMA-Factory"
    work.mkdir()
    file = training_config(
        tmp_path,
        model_name_or_path="./m",
        output_dir="saves/x",
        dataset_dir="data",
        tokenized_path="saves/tok",
    )
    argv = [str(file), *OPTIONS, "--claim-root", str(tmp_path), "--working-dir", str(work)]
    (manifest,), err = converted(argv, capsys)
    spec = manifest["spec"]
    assert spec["storage"] == {
        "claim": "shared",
        "path": "LLaMA-Factory/saves/x",
        "workingDir": "LLaMA-Factory",
    }
    assert spec["dataset"]["dir"] == "LLaMA-Factory/data"
    assert spec["model"]["source"] == "pvc://shared/LLaMA-Factory/m"
    assert spec["config"]["tokenized_path"] == "saves/tok"  # resolves in the working directory, as by hand
    assert "storage.workingDir LLaMA-Factory" in err
    outside = [str(file), *OPTIONS, "--claim-root", str(work), "--working-dir", str(tmp_path)]
    assert cv.main(outside) == 2
    assert "is outside --claim-root" in capsys.readouterr().err


def test_dataset_info_is_found_where_llamafactory_looks_first(tmp_path: Path, capsys) -> None:
    # LLaMA-Factory reads <working directory>/<dataset_dir>/dataset_info.json.
    configs, work = tmp_path / "configs", tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "wd.json"}}))
    configs.mkdir()
    file = training_config(configs)
    (manifest,), _ = converted([str(file), *OPTIONS, "--working-dir", str(work)], capsys)
    assert manifest["spec"]["dataset"]["info"] == {"identity": {"file_name": "wd.json"}}


def test_remote_dataset_dir_is_refused_and_never_a_folder() -> None:
    message = problems_of({**BASE, "dataset_dir": "REMOTE:llamafactory/demo_data"})
    assert "`dataset_dir: REMOTE:llamafactory/demo_data`" in message and "hf_hub_url" in message
    config = {**BASE, "dataset_dir": "REMOTE:llamafactory/demo_data"}
    assert cv.dataset_info_candidates(config, config_dir=Path("c"), working_dir=Path("w")) == []


def test_a_pretraining_example_without_template_converts_and_validates(capsys) -> None:
    from kubetune.api.validation import finetunejob_spec

    (manifest,), _ = converted(
        [str(LF_EXAMPLES / "train_lora" / "qwen3_lora_pretrain.yaml"), *OPTIONS], capsys
    )
    assert manifest["metadata"]["name"] == "qwen3-lora-pretrain"
    assert "template" not in manifest["spec"]["model"]
    spec, problems = finetunejob_spec(manifest["spec"])
    assert spec is not None and problems == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["accelerate/fsdp_config.yaml"], "Accelerate launcher config"),
        (["deepspeed/ds_z3_fp8_config.json"], "DeepSpeed config"),
        (["v1/train_lora_sft.yaml"], "v1 trainer config (`USE_V1=1`)"),
        (["USE_V1=1", "llamafactory-cli", "train", "train_lora/qwen3_lora_pretrain.yaml"], "v1 trainer"),
        (["megatron/qwen3_moe_full.yaml"], "Megatron-Core config (`USE_MCA=1`"),
        (["USE_MCA=1", "llamafactory-cli", "train", "train_lora/qwen3_lora_pretrain.yaml"], "Megatron-Core"),
        (["train_lora/qwen3_lora_pretrain.yaml", "use_megatron_bridge=true"], "Megatron-Bridge config"),
        (["USE_MEGATRON_BRIDGE=1", "train", "train_lora/qwen3_lora_pretrain.yaml"], "Megatron-Bridge"),
        (["train_lora/qwen3moe_lora_sft_kt.yaml"], "KTransformers config"),
        (["inference/llama3_lora_sft.yaml"], "ModelServe"),
        (["merge_lora/llama3_lora_sft.yaml"], "spec.postTraining.merge"),
        (["train_lora/llama3_lora_predict.yaml"], "spec.postTraining.predict"),
    ],
)
def test_a_file_that_is_no_training_config_gets_one_message(argv: list[str], expected: str, capsys) -> None:
    argv = [str(LF_EXAMPLES / a) if a.endswith((".yaml", ".json")) else a for a in argv]
    if argv[0].startswith("/") and len(argv) == 1:
        assert cv.main([argv[0], *OPTIONS]) == 2
    else:
        assert cv.main([*OPTIONS, "--", *argv]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    assert expected in errors[0]


def test_a_removed_transformers_argument_says_where_it_moved() -> None:
    message = problems_of({**BASE, "fsdp_transformer_layer_cls_to_wrap": "Qwen2DecoderLayer"})
    assert "fsdp_config" in message and "removed" in message
