"""Prompt sets, tokenised once per experiment and handed to every engine as token ids.

Three sources (``ExperimentConfig.dataset``):

* ``'builtin'``: several hundred prompts of varied length, expanded deterministically from the
  hand-written templates in ``prompt_data/builtin_prompts.txt`` (our own text, shipped as package data);
* a ``*.jsonl`` path: one ``{"prompt": "..."}`` object per line (blank lines skipped);
* ``SyntheticDatasetConfig``: random token ids from the vocabulary (special tokens excluded), exactly
  ``input_len`` tokens each, seeded (like vLLM bench's "random" set).

``build_prompt_set`` picks ``n`` prompts deterministically from ``random_seed`` (cycling when ``n``
exceeds the source), tokenises each distinct prompt once, and truncates to ``max_input_tokens``
(keeping the first tokens) the same way for every engine, counting the truncated prompts.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from llem_pipeline.domain.config import ExperimentConfig, SyntheticDatasetConfig
from llem_pipeline.engines.protocol import PromptSet

BUILTIN_SIZE = 600  # prompts in the built-in set
_BUILTIN_FILE = "builtin_prompts.txt"
_BUILTIN_SEED = 20240601  # fixes the expansion; independent of ExperimentConfig.random_seed
_SECTION = re.compile(r"^\[(\w+)\]$")


class PromptDataError(ValueError):
    """A prompt source that cannot be used; the message names the file, line and fix."""


def _parse_sections(text: str, source: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _SECTION.match(line)
        if m:
            current = sections.setdefault(m.group(1), [])
        elif current is None:
            raise PromptDataError(f"{source}:{lineno}: text before the first [section] header: {line!r}")
        else:
            current.append(line)
    for name in ("topics", "asks", "context"):
        if not sections.get(name):
            raise PromptDataError(f"{source}: section [{name}] is missing or empty")
    return sections


def expand_templates(sections: dict[str, list[str]], size: int, seed: int) -> list[str]:
    """Return ``size`` prompts expanded from ``topics`` / ``asks`` / ``context`` sections, deterministic in ``seed``.

    Each prompt is one ask about a topic followed by 0–60 context sentences (skewed towards few), so
    lengths range from about ten words to several hundred.
    """
    rng = random.Random(seed)
    topics, asks, context = sections["topics"], sections["asks"], sections["context"]
    prompts: list[str] = []
    for i in range(size):
        topic = topics[i % len(topics)]
        other = rng.choice([t for t in topics if t != topic])
        ask = asks[(i // len(topics) + i) % len(asks)]
        bucket = rng.random()
        if bucket < 0.5:
            k = rng.randint(0, 2)
        elif bucket < 0.8:
            k = rng.randint(3, 8)
        elif bucket < 0.95:
            k = rng.randint(9, 20)
        else:
            k = rng.randint(21, 60)
        extra = [
            rng.choice(context).format(topic=topic, other=rng.choice(topics))
            for _ in range(k)
        ]
        prompts.append(" ".join([ask.format(topic=topic, other=other), *extra]))
    return prompts


@lru_cache(maxsize=1)
def builtin_prompts() -> tuple[str, ...]:
    """Return the built-in prompt texts (``BUILTIN_SIZE`` of them, always the same)."""
    text = resources.files("llem_pipeline.engines").joinpath("prompt_data", _BUILTIN_FILE).read_text("utf-8")
    return tuple(expand_templates(_parse_sections(text, _BUILTIN_FILE), BUILTIN_SIZE, _BUILTIN_SEED))


def builtin_corpus_text() -> str:
    """Return every built-in prompt, one per line (training text for the tiny model's tokenizer)."""
    return "\n".join(builtin_prompts())


def load_jsonl_prompts(path: str | Path) -> list[str]:
    """Return the prompts of a JSONL file: one ``{"prompt": "<text>"}`` object per line, blank lines skipped.

    Raises PromptDataError naming the file and 1-based line number for a line that is not JSON, not an
    object, or lacks a non-empty string ``prompt``; and for a missing or empty file.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise PromptDataError(
            f"dataset={str(path)!r}: file not found (resolved to {str(p.resolve())!r}); "
            "give an existing .jsonl file with one {\"prompt\": ...} object per line"
        )
    prompts: list[str] = []
    with p.open("rb") as fh:
        for lineno, raw_bytes in enumerate(fh, start=1):
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as e:
                raise PromptDataError(
                    f"{p}:{lineno}: not UTF-8 text (byte {raw_bytes[e.start:e.start + 1]!r} at column {e.start + 1}); "
                    "save the file as UTF-8"
                ) from None
            line = raw.strip()
            if not line:
                continue
            try:
                obj: Any = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptDataError(
                    f"{p}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                    "each line must be an object like {\"prompt\": \"...\"}"
                ) from None
            except RecursionError:
                raise PromptDataError(
                    f"{p}:{lineno}: JSON nested too deeply; each line must be an object like {{\"prompt\": \"...\"}}"
                ) from None
            if not isinstance(obj, dict) or "prompt" not in obj:
                raise PromptDataError(
                    f"{p}:{lineno}: expected an object with a \"prompt\" key, got {line[:80]!r}"
                )
            prompt = obj["prompt"]
            if not isinstance(prompt, str) or not prompt.strip():
                raise PromptDataError(
                    f"{p}:{lineno}: \"prompt\" must be a non-empty string, got {prompt!r:.80}"
                )
            prompts.append(prompt)
    if not prompts:
        raise PromptDataError(f"{p}: no prompts (the file is empty); add lines like {{\"prompt\": \"...\"}}")
    return prompts


def select_indices(available: int, n: int, seed: int) -> list[int]:
    """Return ``n`` indices into ``available`` items: a seeded permutation, cycled when ``n > available``."""
    if available < 1:
        raise PromptDataError("the prompt source holds no prompts")
    order = list(range(available))
    random.Random(seed).shuffle(order)
    return [order[i % available] for i in range(n)]


def special_token_ids(tokenizer: Any) -> set[int]:
    """Return the ids of the tokenizer's special tokens (BOS, EOS, PAD, added special tokens)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            ids.add(value)
    return ids


def synthetic_token_ids(
    n: int, input_len: int, seed: int, vocab_size: int, exclude: set[int] | frozenset[int] = frozenset()
) -> list[list[int]]:
    """Return ``n`` prompts of exactly ``input_len`` random token ids in ``[0, vocab_size)`` minus ``exclude``.

    Deterministic in ``seed``; ids are drawn uniformly with replacement.
    """
    allowed = [i for i in range(vocab_size) if i not in exclude]
    if not allowed:
        raise PromptDataError(f"synthetic prompts: no usable token ids in a vocabulary of {vocab_size}")
    rng = random.Random(seed)
    return [rng.choices(allowed, k=input_len) for _ in range(n)]


def tokenize_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Return the token ids of each text (special tokens such as BOS added as the tokenizer does by default)."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=True)
    return [list(ids) for ids in encoded["input_ids"]]


def truncate(token_ids: list[list[int]], max_input_tokens: int) -> tuple[list[list[int]], int]:
    """Return (prompts cut to their first ``max_input_tokens`` ids, how many were cut)."""
    cut = 0
    out: list[list[int]] = []
    for ids in token_ids:
        if len(ids) > max_input_tokens:
            cut += 1
            ids = ids[:max_input_tokens]
        out.append(ids)
    return out, cut


def build_prompt_set(config: ExperimentConfig, tokenizer: Any) -> PromptSet:
    """Return the experiment's ``config.n`` prompts as token ids, tokenised once and truncated identically.

    ``tokenizer`` is a Hugging Face tokenizer (``__call__``, ``all_special_ids``, ``len``). Built-in and
    JSONL prompts are chosen by ``select_indices(…, config.random_seed)``; synthetic prompts come from
    ``dataset.seed``. ``PromptSet.truncated`` counts prompts cut to ``max_input_tokens``.
    """
    ds = config.dataset
    if isinstance(ds, SyntheticDatasetConfig):
        ids = synthetic_token_ids(config.n, ds.input_len, ds.seed, len(tokenizer), special_token_ids(tokenizer))
        ids, cut = truncate(ids, config.max_input_tokens)
        return PromptSet(token_ids=ids, source=f"synthetic(input_len={ds.input_len}, seed={ds.seed})", truncated=cut)
    if ds == "builtin":
        pool: Sequence[str] = builtin_prompts()
        source = "builtin"
    else:
        pool = load_jsonl_prompts(ds)
        source = str(ds)
    chosen = select_indices(len(pool), config.n, config.random_seed)
    distinct = sorted(set(chosen))
    encoded = dict(zip(distinct, tokenize_texts(tokenizer, [pool[i] for i in distinct]), strict=True))
    ids, cut = truncate([encoded[i] for i in chosen], config.max_input_tokens)
    empty = [k for k, t in enumerate(ids) if not t]
    if empty:
        raise PromptDataError(f"{source}: prompt {chosen[empty[0]]} tokenises to no tokens; remove it or add text")
    return PromptSet(token_ids=ids, source=source, truncated=cut, texts=[pool[i] for i in chosen])


def warmup_prompts(prompt_set: PromptSet, k: int) -> list[list[int]]:
    """Return ``k`` full-length warmup prompts: the set's own prompts in order, cycled, untruncated further."""
    if k <= 0 or not prompt_set.token_ids:
        return []
    pool = prompt_set.token_ids
    return [list(pool[i % len(pool)]) for i in range(k)]
