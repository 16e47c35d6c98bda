"""Test helper: a copy of a model directory in which extra token ids also count as EOS."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def eos_variant(src: Path, dst: Path, extra_eos: list[int]) -> Path:
    """Copy model dir ``src`` to ``dst`` with ``eos_token_id = [original, *extra_eos]`` in generation_config.json.

    config.json keeps its single EOS id (what tokenizers and vLLM read as *the* EOS); both engines also
    stop at every id listed in generation_config.json. Returns ``dst``.
    """
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    gen_path = dst / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    original = gen["eos_token_id"]
    base = [original] if isinstance(original, int) else list(original)
    gen["eos_token_id"] = base + [t for t in extra_eos if t not in base]
    gen_path.write_text(json.dumps(gen, indent=2))
    (dst / "llem_model.json").unlink(missing_ok=True)  # no longer the pristine preset
    return dst


def first_positions(generated: list[list[int]], token: int) -> list[int | None]:
    """Return, per row, the index of the first ``token`` (None when absent)."""
    return [row.index(token) if token in row else None for row in generated]


def pick_stop_token(generated: list[list[int]], min_pos: int = 2) -> int:
    """Return a token whose first appearance is at index >= ``min_pos`` in some row and absent from the others' starts.

    Chosen so that, with it as EOS, at least one request stops mid-sequence (not at its first token).
    """
    for row in generated:
        for pos in range(min_pos, len(row)):
            tok = row[pos]
            if all(tok not in r[:min_pos] for r in generated) and tok not in row[:pos]:
                return tok
    raise AssertionError("no suitable stop token in the generated rows")
