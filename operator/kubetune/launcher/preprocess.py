"""`kubetune preprocess`: tokenize a FineTuneJob's datasets once, on CPU, before the GPUs are held.

The preprocessing Job's pod runs it. It reads the same LLaMA-Factory config the training reads, runs
LLaMA-Factory's own data pipeline for it (`get_train_args`, `load_tokenizer`,
`get_template_and_fix_tokenizer`, `get_dataset` with `tokenized_path`, as its training workflows do) and
stops: in 0.9.5 `get_dataset` saves the dataset and returns, and the training would follow.

Where the result goes:
- the config names its own `tokenized_path` (relative to the working directory on the claim): there, as
  LLaMA-Factory would have; a directory that already holds a dataset is used as it is;
- otherwise into the cache on the claim, `.kubetune/tokenized/<key>`, where the key is a hash of everything
  that changes the content (the dataset files' size and mtime, their dataset_info.json entries, the
  tokenizer files' content, LLaMA-Factory's data arguments and the stage, the library versions). A later
  job with the same inputs finds it and skips the work; a changed input gets a new key. The job's output
  path gets a link, `.kubetune/tokenized`, to the entry it trains on (the training config names the link).

A partial result never counts: the pipeline writes into a private `.partial-*` directory, which gets a
completion marker and is renamed into place only at the end (as `kubetune fetch-model` does for models).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from kubetune.api.defaults import DATASET_INFO_FILE, LLAMAFACTORY_CONFIG_FILE
from kubetune.launcher.fetch import write_termination_message
from kubetune.launcher.publish import move_into_place
from kubetune.launcher.reasons import termination_reason

log = logging.getLogger("kubetune.preprocess")

MARKER = ".kubetune-complete"
KEY_VERSION = 1  # bump when what goes into the key changes

# Training-only arguments that LLaMA-Factory checks against the machine (a CPU pod has no bf16 GPU, no
# DeepSpeed); none of them changes what the data pipeline produces.
COMPUTE_ONLY = (
    "deepspeed",
    "fsdp",
    "fsdp_config",
    "bf16",
    "fp16",
    "pure_bf16",
    "tf32",
    "quantization_bit",
    "quantization_method",
    "double_quantization",
    "flash_attn",
    "resume_from_checkpoint",
    "report_to",
    "tokenized_path",
)
# Data arguments that change how fast, not what: left out of the key.
NOT_CONTENT = {
    "tokenized_path",
    "overwrite_cache",
    "preprocessing_num_workers",
    "preprocessing_batch_size",
    "data_shared_file_system",
    "dataset_dir",  # the ConfigMap's mount: its content (the entries) is in the key
}
# Model arguments that say how the tokenizer and the processor are built.
TOKENIZER_ARGUMENTS = (
    "use_fast_tokenizer",
    "split_special_tokens",
    "add_tokens",
    "add_special_tokens",
    "new_special_tokens",
    "resize_vocab",
    "model_revision",
    "image_max_pixels",
    "image_min_pixels",
    "image_do_pan_and_scan",
    "crop_to_patches",
    "video_max_pixels",
    "video_min_pixels",
    "video_fps",
    "video_maxlen",
    "use_audio_in_video",
    "audio_sampling_rate",
    "trust_remote_code",
)
# Training arguments the data pipeline reads (splits, shuffles, evaluation formatting).
TRAINING_ARGUMENTS = ("seed", "do_train", "do_eval", "do_predict", "predict_with_generate")
# Files of a model directory that make up its tokenizer, processor and chat template.
TOKENIZER_FILE_PREFIXES = (
    "tokenizer",
    "special_tokens_map",
    "added_tokens",
    "vocab",
    "merges",
    "chat_template",
    "preprocessor_config",
    "processor_config",
    "video_preprocessor_config",
    "config.json",
    "generation_config.json",
)
# LLaMA-Factory's training workflows call get_dataset with these stages.
DATASET_STAGE = {"pt": "pt", "sft": "sft", "rm": "rm", "dpo": "rm", "ppo": "ppo", "kto": "kto"}


# --- the key ----------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-able, deterministically: enums by value, anything else by its string."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return getattr(value, "value", str(value))


def arguments_of(obj: Any) -> dict[str, Any]:
    """A parsed arguments dataclass as a plain dict (or a dict as it is)."""
    if is_dataclass(obj):
        return {f.name: getattr(obj, f.name, None) for f in fields(obj)}
    return dict(obj)


def file_identity(path: Path) -> list[list[Any]]:
    """[name, size, mtime in ns] of a file, or of every file under a directory; [name, None] when absent."""
    if path.is_dir():
        return [
            [str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(path.rglob("*"))
            if p.is_file()
        ]
    if path.is_file():
        stat = path.stat()
        return [[path.name, stat.st_size, stat.st_mtime_ns]]
    return [[path.name, None]]


def tokenizer_fingerprint(model_dir: Path) -> dict[str, str]:
    """The content hash of each tokenizer and processor file of a local model directory."""
    if not model_dir.is_dir():
        return {}
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(model_dir.iterdir())
        if p.is_file() and (p.name.startswith(TOKENIZER_FILE_PREFIXES) or p.suffix == ".model")
    }


def dataset_files(entries: Mapping[str, Mapping[str, Any]], dataset_dir: Path) -> dict[str, Any]:
    """The identity of the local file (or directory) each entry reads; hub datasets by their entry."""
    identity: dict[str, Any] = {}
    for name, entry in sorted(entries.items()):
        file_name = entry.get("file_name")
        if isinstance(file_name, str):
            identity[name] = file_identity(dataset_dir / file_name)
    return identity


def content_key(
    *,
    stage: str,
    data_arguments: Mapping[str, Any],
    model_arguments: Mapping[str, Any],
    training_arguments: Mapping[str, Any],
    entries: Mapping[str, Any],
    files: Mapping[str, Any],
    tokenizer: Mapping[str, str],
    versions: Mapping[str, str],
) -> str:
    """A hash of everything that changes the tokenized dataset's content; equal inputs, equal key."""
    inputs = {
        "version": KEY_VERSION,
        "stage": stage,
        "data": {k: v for k, v in data_arguments.items() if k not in NOT_CONTENT},
        "model": {k: model_arguments.get(k) for k in TOKENIZER_ARGUMENTS if k in model_arguments},
        "training": {k: training_arguments.get(k) for k in TRAINING_ARGUMENTS if k in training_arguments},
        "entries": entries,
        "files": files,
        "tokenizer": tokenizer,
        "versions": versions,
    }
    encoded = json.dumps(_plain(inputs), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()[:32]


def used_entries(dataset_info: Mapping[str, Any], data_arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset_info.json entries of the datasets the run reads (training and evaluation)."""
    names: list[str] = []
    for key in ("dataset", "eval_dataset"):
        value = data_arguments.get(key)
        if isinstance(value, str):
            value = value.split(",")
        names += [n.strip() for n in value or [] if n and n.strip()]
    return {n: dataset_info.get(n) for n in dict.fromkeys(names)}


def preprocessing_config(config: Mapping[str, Any], output_dir: Path) -> dict[str, Any]:
    """The training config as the data pipeline needs it on a CPU pod: the same data arguments, without
    the arguments that only configure the training hardware, and a scratch output directory."""
    prepared = {k: v for k, v in config.items() if k not in COMPUTE_ONLY}
    prepared.update({"use_cpu": True, "output_dir": str(output_dir), "overwrite_output_dir": True})
    return prepared


# --- where it goes ----------------------------------------------------------------------------------


def is_complete(path: Path) -> bool:
    return (path / MARKER).is_file()


def has_dataset(path: Path) -> bool:
    """LLaMA-Factory's own test (`has_tokenized_data`): a directory that is not empty."""
    return path.is_dir() and any(path.iterdir())


def link(link_path: Path, target: Path) -> None:
    """Points `link_path` at `target` by a relative symbolic link, replaced atomically."""
    link_path.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(target, link_path.parent)
    staged = link_path.parent / f".{link_path.name}.{uuid.uuid4().hex[:8]}"
    staged.symlink_to(relative, target_is_directory=True)
    os.replace(staged, link_path)


def produce(dest: Path, tokenize, *, marker: bool = True, about: dict[str, Any] | None = None) -> str:
    """Makes `dest` hold a complete tokenized dataset; returns `reused` or `tokenized`.

    `tokenize(into)` writes the dataset into a fresh directory; it is renamed into place only when done.
    """
    if is_complete(dest) if marker else has_dataset(dest):
        return "reused"
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    tokenize(partial)
    if not has_dataset(partial):
        raise RuntimeError(f"LLaMA-Factory saved no tokenized dataset into {partial}")
    if marker:
        record = {"completedAt": datetime.now(UTC).isoformat(), **(about or {})}
        (partial / MARKER).write_text(json.dumps(_plain(record), indent=2, sort_keys=True))
    complete = is_complete if marker else has_dataset
    if not move_into_place(partial, dest, complete):
        return "reused"  # another job tokenized the same inputs meanwhile
    return "tokenized"


# --- LLaMA-Factory ----------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("llamafactory", "datasets", "transformers", "tokenizers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "none"
    return found


class Pipeline:
    """LLaMA-Factory's data pipeline for one config: parsed once, run into any directory."""

    def __init__(self, config: Mapping[str, Any], scratch: Path):
        from llamafactory.hparams import get_train_args

        parsed = get_train_args(preprocessing_config(config, scratch))
        self.model_args, self.data_args, self.training_args, self.finetuning_args = parsed[:4]

    @property
    def stage(self) -> str:
        return DATASET_STAGE.get(self.finetuning_args.stage, self.finetuning_args.stage)

    def key(self) -> str:
        data = arguments_of(self.data_args)
        dataset_dir = Path(self.data_args.dataset_dir)
        info_file = dataset_dir / DATASET_INFO_FILE
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        entries = used_entries(info, data)
        return content_key(
            stage=self.stage,
            data_arguments=data,
            model_arguments=arguments_of(self.model_args),
            training_arguments=arguments_of(self.training_args),
            entries=entries,
            files=dataset_files({k: v for k, v in entries.items() if v}, dataset_dir),
            tokenizer=tokenizer_fingerprint(Path(self.model_args.model_name_or_path)),
            versions=_versions(),
        )

    def tokenize(self, into: Path) -> None:
        from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
        from llamafactory.model import load_tokenizer

        self.data_args.tokenized_path = str(into)
        tokenizer_module = load_tokenizer(self.model_args)
        template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], self.data_args)
        # Saves into `into` (it does not exist yet) and returns: the training is not started.
        args = (template, self.model_args, self.data_args, self.training_args)
        get_dataset(*args, stage=self.stage, **tokenizer_module)


def preprocess(config: Mapping[str, Any], cache: Path, link_path: Path) -> tuple[Path, str]:
    """Tokenizes for `config`; returns where the dataset is and `reused` or `tokenized`."""
    with tempfile.TemporaryDirectory(prefix="kubetune-preprocess-") as scratch:
        pipeline = Pipeline(config, Path(scratch))
        own = config.get("tokenized_path")
        if own:
            dest = Path(str(own)).absolute()  # relative to the working directory, as LLaMA-Factory does
            done = produce(dest, pipeline.tokenize, marker=False)
            return dest, done
        key = pipeline.key()
        dest = cache / key
        done = produce(dest, pipeline.tokenize, about={"key": key, "stage": pipeline.stage})
        link(link_path, dest)
        return dest, done


def _log_lines(error: BaseException) -> Iterable[str]:
    return "".join(traceback.format_exception(error)).splitlines()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="kubetune preprocess", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[kubetune] %(asctime)s %(message)s")
    termination_log = os.environ.get("KUBETUNE_TERMINATION_LOG", "/dev/termination-log")
    try:
        config_dir = Path(os.environ.get("KUBETUNE_CONFIG_DIR", "/etc/kubetune"))
        cache = Path(os.environ["KUBETUNE_TOKENIZED_CACHE"])
        link_path = Path(os.environ["KUBETUNE_TOKENIZED_LINK"])
    except KeyError as missing:
        print(f"kubetune preprocess: {missing} is not set; this runs in a preprocessing pod", file=sys.stderr)
        return 2
    config = yaml.safe_load((config_dir / LLAMAFACTORY_CONFIG_FILE).read_text())
    started = time.monotonic()
    try:
        dest, done = preprocess(config, cache, link_path)
    except BaseException as error:  # LLaMA-Factory raises anything, SystemExit too
        if isinstance(error, KeyboardInterrupt):
            raise
        lines = list(_log_lines(error))
        sys.stderr.write("\n".join(lines) + "\n")
        code = error.code if isinstance(error, SystemExit) and isinstance(error.code, int) else 1
        reason = termination_reason(lines, code or 1)
        log.error("%s", reason)
        write_termination_message(reason, termination_log)
        return code or 1
    verb = "found the tokenized dataset in the cache" if done == "reused" else "tokenized the datasets"
    message = f"{verb}: {dest} ({time.monotonic() - started:.0f}s)"
    log.info("%s", message)
    write_termination_message(message, termination_log)
    return 0
