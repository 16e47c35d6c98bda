"""Finding a model (local directory or Hugging Face id) and loading its tokenizer, with clear errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class EngineLoadError(RuntimeError):
    """An engine could not be loaded; the message names the setting, the value and the fix."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"} or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ).lower() in {"1", "true", "yes"}


def looks_like_path(model: str) -> bool:
    """Return True when ``model`` is written as a filesystem path rather than a Hub id ('org/name')."""
    return (
        model.startswith(("/", "./", "../", "~"))
        or model.count("/") > 1
        or (os.sep != "/" and os.sep in model)
    )


def resolve_model(model: str) -> tuple[str, bool]:
    """Return (what to pass to ``from_pretrained`` / ``LLM(model=…)``, whether it is a local directory).

    A local directory must hold ``config.json``. Raises EngineLoadError for a path that does not exist
    or holds no model.
    """
    p = Path(model).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").is_file():
            raise EngineLoadError(
                f"model={model!r}: {str(p.resolve())!r} is not a model directory (no config.json); "
                "point model at a directory written by save_pretrained or `llem make-model DIR --size tiny`"
            )
        return str(p.resolve()), True
    if looks_like_path(model):
        raise EngineLoadError(
            f"model={model!r}: directory not found (resolved to {str(p.resolve())!r}); "
            "build a local test model with `llem make-model DIR --size tiny` or give a Hugging Face id like 'org/name'"
        )
    return model, False


def local_files_only(is_local: bool) -> bool:
    """Return True when loading must not touch the network (local directory, or HF_HUB_OFFLINE=1)."""
    return is_local or _offline()


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Silence transformers' progress bars ("Loading weights", "Writing model shards") inside the block."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_tokenizer(model: str, *, trust_remote_code: bool = False, revision: str | None = None) -> Any:
    """Return the model's Hugging Face tokenizer (left padding); raises EngineLoadError with a fix when missing."""
    from transformers import AutoTokenizer

    target, is_local = resolve_model(model)
    try:
        tok = AutoTokenizer.from_pretrained(
            target,
            trust_remote_code=trust_remote_code,
            revision=revision,
            local_files_only=local_files_only(is_local),
        )
    except (OSError, ValueError) as e:
        raise EngineLoadError(
            f"model={model!r}: tokenizer could not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "check the id/path, or download it first when HF_HUB_OFFLINE=1"
        ) from e
    tok.padding_side = "left"
    return tok


def meta_model(model: str, *, trust_remote_code: bool = False, revision: str | None = None) -> Any:
    """Return the model's architecture instantiated on the meta device (shapes only, no memory, no weights).

    For counting parameters when the weights live elsewhere (vLLM workers). Raises EngineLoadError when
    the config cannot be read.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    target, is_local = resolve_model(model)
    try:
        cfg = AutoConfig.from_pretrained(
            target, trust_remote_code=trust_remote_code, revision=revision, local_files_only=local_files_only(is_local)
        )
    except (OSError, ValueError) as e:
        raise EngineLoadError(f"model={model!r}: config could not be read ({type(e).__name__}: {e})") from e
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
