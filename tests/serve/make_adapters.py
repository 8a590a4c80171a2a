"""Adapters that LLaMA-Factory would not write on purpose, made with PEFT on the tiny model: new weights for
an adapter retrained in place, a rank above the server's, `modules_to_save`, another base model.

Runs under the trainer's interpreter (torch, transformers, peft), as

    python -m tests.serve.make_adapters <base model dir> <dest dir>

and writes <dest>/{v2,rank32,modules-to-save,other-base} (and <dest>/other-model, the other base). Must not
import kubetune.
"""

from __future__ import annotations

import sys
from pathlib import Path

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora(model_dir: Path, dest: Path, rank: int, seed: int, **extra: object) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # init_lora_weights=False: random A and B, so the adapter visibly changes what the model says.
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, init_lora_weights=False, **extra)
    get_peft_model(model, config).save_pretrained(dest)


def other_model(dest: Path, like: Path) -> Path:
    """A Qwen2 of another size (hidden 96), with the tiny model's tokenizer."""
    import shutil

    import torch
    from transformers import AutoConfig, Qwen2ForCausalLM

    config = AutoConfig.from_pretrained(like)
    config.hidden_size, config.num_attention_heads, config.intermediate_size = 96, 3, 192
    config.head_dim = 32
    torch.manual_seed(7)
    Qwen2ForCausalLM(config).save_pretrained(dest)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (like / name).exists():
            shutil.copyfile(like / name, dest / name)
    return dest


def main(base: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    lora(base, dest / "v2", rank=8, seed=2)
    lora(base, dest / "rank32", rank=32, seed=3)
    lora(base, dest / "modules-to-save", rank=8, seed=4, modules_to_save=["lm_head"])
    lora(other_model(dest / "other-model", base), dest / "other-base", rank=8, seed=5)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
