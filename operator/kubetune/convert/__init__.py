"""`kubetune convert`: a LLaMA-Factory training config, as users run it today, -> a FineTuneJob.

Pure but for reading the files a config names: the standard library, yaml, pydantic and `kubetune.api`
only (never a Kubernetes client), so a config converts the same on a laptop, in CI and in the tests.

- `read`: reading LLaMA-Factory's inputs (a config file, a `llamafactory-cli train` command line) the way it
  reads them, and looking up what the config names on this machine (the DeepSpeed file, local model and
  adapter directories, dataset_info.json), as LLaMA-Factory would from its working directory;
- `kinds`: files that are not training configs (Accelerate, DeepSpeed, v1, Megatron, KTransformers, chat,
  export, predict-only), each refused with one message that says what to do;
- `spec`: the mapping onto a FineTuneJob spec (pure: it gets what `read` found);
- `command`: the `kubetune convert` command.
"""

from kubetune.convert.command import build_parser, default_name, main, readable_name, to_yaml
from kubetune.convert.errors import ConversionError, ConversionResult
from kubetune.convert.kinds import what_it_is
from kubetune.convert.read import (
    Found,
    dataset_info_candidates,
    load_lf_config,
    look_around,
    parse_command,
    parse_lf_args,
)
from kubetune.convert.spec import CONVERTED_KEYS, DEEPSPEED_PRESETS, convert, is_hub_id

__all__ = [
    "CONVERTED_KEYS",
    "DEEPSPEED_PRESETS",
    "ConversionError",
    "ConversionResult",
    "Found",
    "build_parser",
    "convert",
    "dataset_info_candidates",
    "default_name",
    "is_hub_id",
    "load_lf_config",
    "look_around",
    "main",
    "parse_command",
    "parse_lf_args",
    "readable_name",
    "to_yaml",
    "what_it_is",
]
