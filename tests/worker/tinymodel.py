"""A tiny random causal LM that LLaMA-Factory can fine-tune on the CPU, built with no download.

`build_tiny_model(dest, corpus_files)` trains a byte-level BPE tokenizer on the text of the corpus files
(JSON and JSON Lines files give the strings they hold, other files their raw text), adds the special tokens
and the chat template of a LLaMA-Factory template (`qwen`), and saves it as a transformers
`PreTrainedTokenizerFast` next to a 2-layer `Qwen2ForCausalLM` with random float32 weights in safetensors.
The same inputs give the same files (fixed seeds); it takes a few seconds on one CPU core.

This module runs under the trainer's interpreter (torch, transformers, tokenizers); it must not import
kubetune.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED = 1234
VOCAB_SIZE = 1024  # a target: a small corpus may have fewer merges to learn, and the vocabulary is smaller

# Some text of our own beside the corpus, so that a one-record corpus still gives a vocabulary near 1000 and
# English and JSON text do not all fall to single bytes.
_SEED_TEXT = """\
The quick brown fox jumps over the lazy dog. A helpful assistant answers the question of the user, step by
step, in English or in Chinese, and writes JSON when it is asked to: {"label": "name", "text": "value"}.
Fine-tuning a language model on a cluster: the operator starts the trainer pods, the trainer reads the
dataset, computes the loss, saves checkpoints and adapters, and reports progress, learning rate and epoch.
Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100 and 2024 appear in dates, counts and prices.
Entity labels: name, organization, scene, company, movie, book, government, position, address, game.
Kubernetes schedules pods onto nodes with enough GPUs, memory and storage; a persistent volume claim keeps
the model weights, tokenizer files, configuration, evaluation metrics and predictions between restarts.
Please summarize this article briefly, translate that sentence, classify every review as positive or
negative, extract keywords, generate a title, and explain why the answer should be correct.
"""

# Qwen2's pre-tokenizer split (its tokenizer.json), before the byte-level mapping.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

# Qwen2.5-Instruct's chat template, less the tool calls.
_QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class _TemplateTokens:
    special: tuple[str, ...]  # in id order, first in the vocabulary
    eos: str
    pad: str
    chat_template: str
    seed_text: str  # the template's own text, so that the tokenizer has merges for it


_TEMPLATES: dict[str, _TemplateTokens] = {
    "qwen": _TemplateTokens(
        special=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        eos="<|im_end|>",  # LLaMA-Factory's qwen template replaces the eos with its stop word, <|im_end|>
        pad="<|endoftext|>",
        chat_template=_QWEN_CHAT_TEMPLATE,
        seed_text=(
            "system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n"
            "user\n\nassistant\n\ntool\n<tool_response>\n</tool_response>\n"
        ),
    ),
}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _corpus_texts(corpus_files: list[Path]) -> list[str]:
    texts: list[str] = []
    for path in corpus_files:
        raw = Path(path).read_text(encoding="utf-8")
        suffix = Path(path).suffix.lower()
        if suffix == ".json":
            texts.extend(_strings(json.loads(raw)))
        elif suffix == ".jsonl":
            for line in raw.splitlines():
                if line.strip():
                    texts.extend(_strings(json.loads(line)))
        else:
            texts.append(raw)
    return texts


def _train_tokenizer(texts: list[str], tokens: _TemplateTokens, vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(tokens.special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([tokens.seed_text, _SEED_TEXT, *texts], trainer=trainer)
    return tokenizer


# The model's dimensions: 2 layers of 64 (the CPU tiers). The GPU tier passes its own, a model large enough
# that a step is real work for a GPU.
TINY_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    # Heads of 32: vLLM's CPU attention refuses a head size of 16 (the serve tier runs this model).
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "dtype": "float32",
}


def build_tiny_model(
    dest: Path, corpus_files: list[Path], template: str = "qwen", shape: dict[str, Any] | None = None
) -> Path:
    """Build the tokenizer and the random model into `dest` (created if missing) and return `dest`.
    `shape`: the model's dimensions and dtype (TINY_SHAPE's keys), TINY_SHAPE where not given."""
    if template not in _TEMPLATES:
        raise ValueError(f"no tiny model for template {template!r}; known: {sorted(_TEMPLATES)}")
    tokens = _TEMPLATES[template]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    import torch
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    texts = _corpus_texts(corpus_files)
    if not texts:
        raise ValueError(f"no text in the corpus files {[str(p) for p in corpus_files]}")
    backend = _train_tokenizer(texts, tokens, VOCAB_SIZE)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=tokens.eos,
        pad_token=tokens.pad,
        bos_token=None,
        unk_token=None,
        model_max_length=512,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = tokens.chat_template
    tokenizer.save_pretrained(dest)
    # transformers 5 writes its own class name, TokenizersBackend, which transformers 4 (a vLLM image, say)
    # does not know; PreTrainedTokenizerFast loads tokenizer.json as it is in both.
    config_path = dest / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text(encoding="utf-8"))
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(
        json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )

    eos_id = tokenizer.convert_tokens_to_ids(tokens.eos)
    pad_id = tokenizer.convert_tokens_to_ids(tokens.pad)
    dims = {**TINY_SHAPE, **(shape or {})}
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        max_window_layers=dims["num_hidden_layers"],
        use_sliding_window=False,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        **dims,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Qwen2ForCausalLM(config).to(getattr(torch, dims["dtype"]))
    model.generation_config = GenerationConfig(
        bos_token_id=None, eos_token_id=[eos_id, pad_id], pad_token_id=pad_id, do_sample=False
    )
    model.save_pretrained(dest, safe_serialization=True)
    return dest
