"""Tiny offline models: determinism, size, presets, idempotence, the `llem make-model` command."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from llem_pipeline import cli
from llem_pipeline.engines import tiny_model as T


def _hashes(d: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir()) if f.is_file()}


def test_tiny_model_is_small_and_vllm_shaped(tiny_model_dir: Path):
    names = {f.name for f in tiny_model_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", T.MARKER} <= names
    assert T.directory_size_bytes(tiny_model_dir) < 2_000_000
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["tie_word_embeddings"] is True
    assert cfg["hidden_size"] // cfg["num_attention_heads"] >= 32
    marker = json.loads((tiny_model_dir / T.MARKER).read_text())
    assert marker["size"] == "tiny" and marker["seed"] == 0
    assert 150_000 < marker["parameters"] < 300_000
    assert marker["tokenizer_vocab"] == cfg["vocab_size"] == 2048


def test_same_seed_same_bytes_other_seed_other_weights(tiny_model_dir: Path, tmp_path: Path):
    again = T.make_model(tmp_path / "again", "tiny", 0)
    assert _hashes(again) == _hashes(tiny_model_dir)
    other = T.make_model(tmp_path / "other", "tiny", 1)
    assert _hashes(other)["model.safetensors"] != _hashes(tiny_model_dir)["model.safetensors"]
    assert _hashes(other)["tokenizer.json"] != _hashes(tiny_model_dir)["tokenizer.json"]


def test_make_model_is_idempotent_and_refuses_to_clobber(tmp_path: Path):
    out = T.make_model(tmp_path / "m", "tiny", 3)
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert T.make_model(out, "tiny", 3) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="seed 3, not 'tiny' seed 4: use --force"):
        T.make_model(out, "tiny", 4)
    T.make_model(out, "tiny", 4, force=True)
    assert json.loads((out / T.MARKER).read_text())["seed"] == 4
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a model built by"):
        T.make_model(foreign, "tiny", 0, force=True)
    assert (foreign / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temp dirs left behind


def test_tokenizer_round_trips_text_offline(tiny_model_dir: Path):
    from llem_pipeline.engines.model_files import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    text = "Explain the water cycle to someone who has never heard of it."
    ids = tok(text)["input_ids"]
    assert 5 < len(ids) < len(text) and tok.decode(ids) == text
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.padding_side) == ("<s>", "</s>", "<pad>", "left")


@pytest.mark.parametrize(("size", "low", "high"), [("small", 100e6, 140e6), ("1b", 1.0e9, 1.3e9), ("8b", 7.9e9, 8.1e9)])
def test_bigger_presets_have_their_advertised_shapes(size: str, low: float, high: float):
    assert low < T.preset_parameter_count(size) < high
    assert T.PRESETS[size].head_dim >= 32


def test_unknown_preset_is_rejected(tmp_path: Path):
    with pytest.raises(ValueError, match="size='huge' is not a preset: choose one of tiny, small, 1b, 8b"):
        T.make_model(tmp_path / "x", "huge")


def test_llem_make_model_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "cli-model"
    assert cli.main(["make-model", str(out), "--size", "tiny", "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: preset=tiny seed=0 parameters=" in printed
    assert cli.main(["make-model", str(out), "--seed", "9"]) == 2
    assert "use --force" in capsys.readouterr().err
    assert cli.main(["no-such-command"]) == 2
    assert cli.main(["--help"]) == 0 and "make-model" in capsys.readouterr().out


def test_ensure_tiny_model_defaults_under_llem_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LLEM_DATA_DIR", str(tmp_path / "data"))
    path = T.ensure_tiny_model()
    assert path == (tmp_path / "data" / "models" / "tiny-llama").resolve()
    assert (path / "model.safetensors").is_file() and T.ensure_tiny_model() == path


def test_meta_model_counts_parameters_without_weights(tiny_model_dir: Path):
    from llem_pipeline.engines.model_files import meta_model

    m = meta_model(str(tiny_model_dir))
    assert next(m.parameters()).device.type == "meta"
    marker = json.loads((tiny_model_dir / T.MARKER).read_text())
    assert sum(p.numel() for p in m.parameters()) == marker["parameters"]
