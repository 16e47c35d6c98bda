"""Offline Llama-style models with random weights and a locally trained BPE tokenizer.

``make_model(out_dir, size, seed)`` writes a directory that ``from_pretrained`` and vLLM load like any
Hugging Face checkpoint: ``config.json``, ``generation_config.json``, ``model.safetensors`` (sharded for
big presets), ``tokenizer.json``, ``tokenizer_config.json``, plus the marker ``llem_model.json``.
Nothing is downloaded: the tokenizer is trained with ``tokenizers`` on the built-in prompt text plus
seeded syllable words, the weights are ``LlamaForCausalLM``'s own random initialisation under
``torch.manual_seed(seed)``. The same preset and seed give the same bytes (on the same device kind).

Presets (parameters counted with the model's vocabulary):

============  ======  ======  ======  =====  =====  ==========  ========  ====================
preset        hidden  inter   layers  heads  kv     vocab       tied      ~params
============  ======  ======  ======  =====  =====  ==========  ========  ====================
``tiny``      64      128     2       2      2      2048        yes       213 k (< 2 MB, < 1 s)
``small``     768     3072    12      12     12     8192        yes       120 M
``1b``        2048    8192    16      32     8      128256      yes       1.24 B (Llama-3.2-1B)
``8b``        4096    14336   32      32     8      128256      no        8.03 B (Llama-3-8B)
============  ======  ======  ======  =====  =====  ==========  ========  ====================

Every preset has head_dim ≥ 32 (vLLM's CPU attention rejects 16). ``1b`` and ``8b`` keep a tokenizer
of 8192 entries and a model vocabulary of 128256 (the lm_head has Llama-3's shape; ids the tokenizer
cannot decode may be generated, which token counting does not mind). Big presets are built directly
on the target device in bf16 (``device='cuda'`` by default when available) and saved in 5 GB shards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MARKER = "llem_model.json"
FORMAT_VERSION = 2
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")


@dataclass(frozen=True)
class ModelPreset:
    """Shape of one preset (see the module docstring)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    tokenizer_vocab: int
    model_vocab: int | None  # None = the tokenizer's size
    tie_word_embeddings: bool
    max_position_embeddings: int
    dtype: str  # 'float32' or 'bfloat16'
    rope_theta: float | None = None
    corpus_words: int = 3000
    corpus_sentences: int = 5000
    initializer_range: float = 0.02  # std of the random weights

    @property
    def head_dim(self) -> int:
        """Attention head dimension (hidden_size / heads)."""
        return self.hidden_size // self.num_attention_heads


PRESETS: dict[str, ModelPreset] = {
    # tiny: std 0.2 (not Llama's 0.02) so greedy output varies instead of repeating one token
    "tiny": ModelPreset(64, 128, 2, 2, 2, 2048, None, True, 2048, "float32", initializer_range=0.2),
    "small": ModelPreset(768, 3072, 12, 12, 12, 8192, None, True, 4096, "float32", corpus_words=12000, corpus_sentences=20000),
    "1b": ModelPreset(2048, 8192, 16, 32, 8, 8192, 128256, True, 8192, "bfloat16", 500000.0, 12000, 20000),
    "8b": ModelPreset(4096, 14336, 32, 32, 8, 8192, 128256, False, 8192, "bfloat16", 500000.0, 12000, 20000),
}


def _offline_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _syllable_words(rng: random.Random, count: int) -> list[str]:
    onsets = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
              "br", "ch", "dr", "fl", "gr", "kl", "pr", "sh", "st", "th", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y"]
    codas = ["", "", "", "n", "r", "s", "t", "l", "m", "ck", "nd", "st"]
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def tokenizer_corpus(seed: int, words: int = 3000, sentences: int = 5000) -> list[str]:
    """Return the tokenizer training text: built-in prompts plus seeded sentences of syllable words."""
    from llem_pipeline.engines.prompts import builtin_prompts

    rng = random.Random(seed)
    vocab = _syllable_words(rng, words)
    prompt_words = " ".join(builtin_prompts()).split()
    lines = list(builtin_prompts())
    for _ in range(sentences):
        parts = [rng.choice(vocab) if rng.random() < 0.7 else rng.choice(prompt_words) for _ in range(rng.randint(4, 12))]
        lines.append(" ".join(parts).capitalize() + rng.choice([".", ".", "?", "!", ","]))
    return lines


def train_tokenizer(seed: int, vocab_size: int, words: int = 3000, sentences: int = 5000) -> Any:
    """Return a ``PreTrainedTokenizerFast`` (ByteLevel BPE, ``vocab_size`` entries incl. <pad>, <s>, </s>; left padding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(seed, words, sentences), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", padding_side="left"
    )


def llama_config(preset: ModelPreset, tokenizer_size: int, bos_id: int, eos_id: int, pad_id: int) -> Any:
    """Return the ``LlamaConfig`` of a preset (model vocabulary = ``preset.model_vocab`` or ``tokenizer_size``)."""
    from transformers import LlamaConfig

    kwargs: dict[str, Any] = {}
    if preset.rope_theta is not None:
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": preset.rope_theta}
    return LlamaConfig(
        vocab_size=preset.model_vocab or tokenizer_size,
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_hidden_layers,
        num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_key_value_heads,
        max_position_embeddings=preset.max_position_embeddings,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=preset.tie_word_embeddings,
        initializer_range=preset.initializer_range,
        **kwargs,
    )


def preset_parameter_count(size: str) -> int:
    """Return the parameter count of a preset, counted on the meta device (no memory, no weights)."""
    import torch
    from transformers import LlamaForCausalLM

    preset = PRESETS[size]
    cfg = llama_config(preset, preset.tokenizer_vocab, 1, 2, 0)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    return sum(p.numel() for p in model.parameters())


def _read_marker(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _matches(marker: dict[str, Any] | None, size: str, seed: int) -> bool:
    return bool(marker) and marker.get("size") == size and marker.get("seed") == seed and marker.get("format") == FORMAT_VERSION  # type: ignore[union-attr]


def _build(tmp: Path, size: str, seed: int, device: str) -> dict[str, Any]:
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    preset = PRESETS[size]
    tokenizer = train_tokenizer(seed, preset.tokenizer_vocab, preset.corpus_words, preset.corpus_sentences)
    cfg = llama_config(preset, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    dtype = getattr(torch, preset.dtype)
    cfg.dtype = preset.dtype
    old_dtype = torch.get_default_dtype()
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            torch.set_default_dtype(dtype)
            with torch.device(device):
                model = LlamaForCausalLM(cfg)
        finally:
            torch.set_default_dtype(old_dtype)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    params = sum(p.numel() for p in model.parameters())
    from llem_pipeline.engines.model_files import quiet_progress

    with quiet_progress():
        model.save_pretrained(tmp, max_shard_size="5GB")
        tokenizer.save_pretrained(tmp)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "size": size,
        "seed": seed,
        "format": FORMAT_VERSION,
        "parameters": params,
        "tokenizer_vocab": len(tokenizer),
        "preset": asdict(preset),
        "built_on": torch.device(device).type,
    }


def make_model(out_dir: str | Path, size: str = "tiny", seed: int = 0, *, device: str | None = None, force: bool = False) -> Path:
    """Build (or reuse) a random-weight Llama-style model in ``out_dir``; return the directory path.

    Idempotent: returns at once when ``out_dir`` already holds the same preset and seed (marker file).
    A directory holding something else raises FileExistsError unless ``force=True`` (which replaces
    it only when it is one of our model directories). ``device`` defaults to 'cpu' for tiny/small and
    to 'cuda' (when available) for 1b/8b. Writes to a sibling temp directory and renames it into place,
    so concurrent builders never see a half-written model.
    """
    if size not in PRESETS:
        raise ValueError(f"size={size!r} is not a preset: choose one of {', '.join(PRESETS)}")
    _offline_env()
    out = Path(out_dir).expanduser().resolve()
    marker = _read_marker(out)
    if _matches(marker, size, seed):
        return out
    if out.exists() and any(out.iterdir()):
        if marker is None:
            raise FileExistsError(f"{out} exists and is not a model built by `llem make-model`; choose an empty or new directory")
        if not force:
            raise FileExistsError(
                f"{out} holds preset {marker.get('size')!r} seed {marker.get('seed')!r}, not {size!r} seed {seed}: "
                "use --force to rebuild it or choose another directory"
            )
    if device is None:
        device = "cpu"
        if PRESETS[size].dtype != "float32":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    try:
        info = _build(tmp, size, seed, device)
        (tmp / MARKER).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if out.exists():
            if _matches(_read_marker(out), size, seed):  # another process finished first
                return out
            shutil.rmtree(out) if any(out.iterdir()) else out.rmdir()
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def default_tiny_model_dir() -> Path:
    """Return the default location of the tiny test model: ``<data_dir>/models/tiny-llama``."""
    from llem_pipeline.paths import models_dir

    return models_dir() / "tiny-llama"


def ensure_tiny_model(path: str | Path | None = None) -> Path:
    """Return the path of the tiny model (preset 'tiny', seed 0), building it there first if needed.

    ``path`` defaults to ``default_tiny_model_dir()`` (``LLEM_DATA_DIR`` moves it).
    """
    return make_model(path if path is not None else default_tiny_model_dir(), "tiny", 0)


def directory_size_bytes(path: str | Path) -> int:
    """Return the total size of the files under ``path``, bytes."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main_make_model(argv: list[str]) -> int:
    """``llem make-model DIR [--size tiny] [--seed 0] [--device DEV] [--force]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="llem make-model",
        description="Build a Llama-style model with random weights and a locally trained BPE tokenizer (no network).",
    )
    parser.add_argument("dir", help="output directory")
    parser.add_argument("--size", default="tiny", choices=list(PRESETS), help="preset (default: tiny)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tokenizer corpus and weights (default: 0)")
    parser.add_argument("--device", default=None, help="build device, e.g. cpu or cuda:0 (default: cpu; cuda for 1b/8b)")
    parser.add_argument("--force", action="store_true", help="replace a model of another preset/seed in DIR")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        out = make_model(args.dir, args.size, args.seed, device=args.device, force=args.force)
    except (FileExistsError, ValueError) as e:
        print(f"llem make-model: error: {e}", file=sys.stderr)
        return 2
    marker = _read_marker(out) or {}
    print(
        f"{out}: preset={marker.get('size')} seed={marker.get('seed')} parameters={marker.get('parameters')} "
        f"size_bytes={directory_size_bytes(out)} elapsed_s={time.perf_counter() - t0:.2f}"
    )
    return 0
