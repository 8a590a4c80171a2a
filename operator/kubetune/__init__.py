"""kubetune: LLaMA-Factory fine-tuning and vLLM LoRA serving as Kubernetes resources."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kubetune")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
