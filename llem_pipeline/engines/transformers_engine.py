"""The transformers engine (backend 'pytorch'): static batches, left padding, per-step token timestamps.

Prompts arrive as token ids (``PromptSet.token_ids``) and are processed in order, ``batch_size`` at a
time, left-padded to the longest prompt of the batch with an attention mask. Every request of a batch
is submitted at the batch start (its ``submit_time_s``).

Timing: a ``StoppingCriteria`` that never stops (``_StepClock``) is called by ``generate()`` once per
decoding step, right after the step's tokens are appended; it reads ``time.perf_counter()`` once
(after a device synchronisation on CUDA, where ``generate()`` synchronises every step anyway to test
for finished rows). Step ``k``'s timestamp is the time token ``k`` of every still-active request of the
batch became available. Cost: one Python call and one clock read per step (see bench/engine_timing.py).

Token counts: fixed output length (``min_new_tokens = max_new_tokens``, so EOS is never produced and
every request gets exactly ``max_output_tokens``) or EOS stop, where a request counts its tokens up to
and including its first EOS; padding and anything after EOS never count.
"""

from __future__ import annotations

import gc
import importlib.util
import time
from typing import Any

from llem_pipeline.domain.config import ExperimentConfig, PyTorchConfig
from llem_pipeline.domain.requests import RequestRecord
from llem_pipeline.engines.model_files import EngineLoadError, local_files_only, quiet_progress, resolve_model
from llem_pipeline.engines.protocol import EngineInfo

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_STEP_CLOCK_CLS: Any = None


def _step_clock_class() -> Any:
    """Return the ``_StepClock`` StoppingCriteria class (built on first use: transformers is imported lazily)."""
    global _STEP_CLOCK_CLS
    if _STEP_CLOCK_CLS is None:
        import torch
        from transformers import StoppingCriteria

        class _StepClock(StoppingCriteria):
            """Records ``time.perf_counter()`` once per decoding step; never stops generation."""

            def __init__(self, sync: Any = None) -> None:
                self.times: list[float] = []
                self._sync = sync
                self._never: Any = None

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                if self._sync is not None:
                    self._sync()
                self.times.append(time.perf_counter())
                never = self._never
                if never is None or never.shape[0] != input_ids.shape[0]:
                    never = self._never = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
                return never

        _STEP_CLOCK_CLS = _StepClock
    return _STEP_CLOCK_CLS


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def count_output_tokens(generated: list[int], eos_ids: set[int], stop_at_eos: bool) -> tuple[int, str]:
    """Return (output tokens, finish reason) of one generated row (prompt removed, may end in padding).

    With ``stop_at_eos`` the count runs up to and including the first EOS id ('eos'); otherwise, or when
    no EOS occurs, it is the row length ('length').
    """
    if stop_at_eos and eos_ids:
        for i, tok in enumerate(generated):
            if tok in eos_ids:
                return i + 1, "eos"
    return len(generated), "length"


class TransformersEngine:
    """A loaded transformers causal LM; implements ``engines.protocol.Engine``.

    ``last_token_ids`` holds the generated ids of each request of the latest ``run``/``warmup`` (no
    padding, nothing after EOS), for tests and cross-engine comparisons.
    """

    def __init__(self, config: ExperimentConfig, model: Any, device: Any, info: EngineInfo) -> None:
        import torch

        self._torch = torch
        self.config = config
        self.model: Any = model
        self.device = device
        self.info = info
        section = config.pytorch or PyTorchConfig()
        self.batch_size = section.batch_size
        gen_cfg = getattr(model, "generation_config", None)
        eos = _as_list(getattr(gen_cfg, "eos_token_id", None)) or _as_list(getattr(model.config, "eos_token_id", None))
        self.eos_ids = set(eos)
        pad = getattr(gen_cfg, "pad_token_id", None)
        if pad is None:
            pad = getattr(model.config, "pad_token_id", None)
        self.pad_id: int = int(pad) if pad is not None else (eos[0] if eos else 0)
        dec = config.decoder
        kw: dict[str, Any] = {
            "max_new_tokens": config.max_output_tokens,
            "do_sample": dec.do_sample,
            "num_beams": 1,
            "pad_token_id": self.pad_id,
            "eos_token_id": eos or None,
            "use_cache": section.use_cache,
            "repetition_penalty": dec.repetition_penalty,
        }
        if dec.do_sample:
            kw.update(temperature=dec.temperature, top_k=dec.top_k, top_p=dec.top_p)
        else:
            kw.update(temperature=None, top_k=None, top_p=None)
        if config.fixed_output_length:
            kw["min_new_tokens"] = config.max_output_tokens
        self.generate_kwargs = kw
        self._cuda = device.type == "cuda"
        self._sync = (lambda: torch.cuda.synchronize(device)) if self._cuda else None
        self.last_token_ids: list[list[int]] = []

    # -- Engine protocol -------------------------------------------------------------------------
    def warmup(self, prompts: list[list[int]]) -> list[RequestRecord]:
        """Run full-length warmup requests; return their records (never counted in results)."""
        return self._run_all(prompts)

    def run(self, prompts: list[list[int]]) -> list[RequestRecord]:
        """Generate for every prompt (token ids), in order, ``batch_size`` per ``generate()``; one record per prompt.

        Times are ``time.perf_counter()`` seconds; on CUDA the device is synchronised at the start and
        the end. The torch RNGs are re-seeded with ``random_seed`` first, so a run is reproducible.
        """
        return self._run_all(prompts)

    def peak_memory_mb(self) -> float | None:
        """Peak CUDA memory allocated since load, MB (MiB); None on CPU."""
        if not self._cuda:
            return None
        return self._torch.cuda.max_memory_allocated(self.device) / 2**20

    def cleanup(self) -> None:
        """Drop the model and free device memory (gc + ``torch.cuda.empty_cache``); safe to call twice."""
        self.model = None
        gc.collect()
        if self._cuda:
            self._torch.cuda.empty_cache()

    def __enter__(self) -> TransformersEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- internals ----------------------------------------------------------------------------------
    def _run_all(self, prompts: list[list[int]]) -> list[RequestRecord]:
        if self.model is None:
            raise RuntimeError("the engine was cleaned up; load it again with load_transformers_engine()")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("a prompt has no tokens: every request needs at least one input token")
        from transformers import set_seed

        set_seed(self.config.random_seed)
        if self._sync:
            self._sync()
        records: list[RequestRecord] = []
        token_ids: list[list[int]] = []
        for start in range(0, len(prompts), self.batch_size):
            recs, ids = self._run_batch(prompts[start : start + self.batch_size], start)
            records.extend(recs)
            token_ids.extend(ids)
        if self._sync:
            self._sync()
        self.last_token_ids = token_ids
        return records

    def _run_batch(self, batch: list[list[int]], first_index: int) -> tuple[list[RequestRecord], list[list[int]]]:
        torch = self._torch
        from transformers import StoppingCriteriaList

        submit = time.perf_counter()
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, prompt in enumerate(batch):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        clock = _step_clock_class()(self._sync)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids, attention_mask=mask, stopping_criteria=StoppingCriteriaList([clock]), **self.generate_kwargs
            )
        generated = out[:, width:].tolist()
        steps = clock.times
        if generated and len(generated[0]) != len(steps):
            raise RuntimeError(f"timing hook saw {len(steps)} decoding steps but generate() returned {len(generated[0])} tokens per row")
        fixed = self.config.fixed_output_length
        records: list[RequestRecord] = []
        kept: list[list[int]] = []
        for row, (prompt, gen) in enumerate(zip(batch, generated, strict=True)):
            n_out, reason = count_output_tokens(gen, self.eos_ids, stop_at_eos=not fixed)
            if fixed and n_out != self.config.max_output_tokens:
                raise RuntimeError(
                    f"fixed_output_length: request {first_index + row} generated {n_out} tokens, "
                    f"expected max_output_tokens={self.config.max_output_tokens}"
                )
            times = steps[:n_out]
            records.append(
                RequestRecord(
                    request_index=first_index + row,
                    input_tokens=len(prompt),
                    output_tokens=n_out,
                    submit_time_s=submit,
                    first_token_time_s=times[0] if times else None,
                    token_times_s=times,
                    done_time_s=times[-1] if times else submit,
                    finish_reason=reason,
                )
            )
            kept.append(gen[:n_out])
        return records, kept


def _device_for(device_indices: list[int]) -> Any:
    import torch

    if device_indices and torch.cuda.is_available():
        return torch.device(f"cuda:{device_indices[0]}")
    return torch.device("cpu")


def _check_quantisation(section: PyTorchConfig, device: Any) -> None:
    if not (section.load_in_4bit or section.load_in_8bit):
        return
    flag = "load_in_4bit" if section.load_in_4bit else "load_in_8bit"
    if importlib.util.find_spec("bitsandbytes") is None:
        raise EngineLoadError(
            f"pytorch.{flag}=true needs the bitsandbytes package, which is not installed: "
            "`pip install bitsandbytes` on a CUDA host, or set pytorch.{flag}=false".replace("{flag}", flag)
        )
    if device.type != "cuda":
        raise EngineLoadError(f"pytorch.{flag}=true needs a CUDA GPU (bitsandbytes); this run has device {device}")


def load_transformers_engine(config: ExperimentConfig, device_indices: list[int]) -> TransformersEngine:
    """Load ``config.model`` with transformers onto ``cuda:<device_indices[0]>`` (CPU when CUDA is absent).

    Applies precision, ``pytorch.device_map`` / ``attn_implementation`` / ``torch_compile`` /
    bitsandbytes flags / ``trust_remote_code`` / ``revision``; ``local_files_only`` for local directories
    and when HF_HUB_OFFLINE=1. Returns a ``TransformersEngine``; frees memory before re-raising any error.
    Raises EngineLoadError with a fix for a missing model, missing bitsandbytes, or a failed load.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    section = config.pytorch or PyTorchConfig()
    target, is_local = resolve_model(config.model)
    device = _device_for(device_indices)
    _check_quantisation(section, device)
    dtype = getattr(torch, DTYPES[config.precision])
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "trust_remote_code": section.trust_remote_code,
        "local_files_only": local_files_only(is_local),
    }
    if section.revision:
        kwargs["revision"] = section.revision
    if section.attn_implementation:
        kwargs["attn_implementation"] = section.attn_implementation
    if section.load_in_4bit or section.load_in_8bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=section.load_in_4bit,
            load_in_8bit=section.load_in_8bit,
            bnb_4bit_quant_type=section.bnb_4bit_quant_type or "nf4",
            bnb_4bit_compute_dtype=dtype,
        )
    if section.device_map is not None:
        kwargs["device_map"] = section.device_map
    elif section.load_in_4bit or section.load_in_8bit:
        kwargs["device_map"] = {"": device.index or 0}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = None
    try:
        try:
            with quiet_progress():
                model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
        except (OSError, ValueError, ImportError) as e:
            raise EngineLoadError(
                f"model={config.model!r} could not be loaded by transformers "
                f"({type(e).__name__}: {str(e).splitlines()[0][:300]}); check the path/id, precision and pytorch section"
            ) from e
        if "device_map" not in kwargs:
            model = model.to(device)
        else:
            device = model.get_input_embeddings().weight.device
        model.eval()
        if section.torch_compile:
            model.forward = torch.compile(model.forward, mode=section.torch_compile_mode or "default")
        info = EngineInfo(
            backend="pytorch",
            backend_version=transformers.__version__,
            model_memory_mb=model.get_memory_footprint() / 2**20,
            extras={
                "torch_version": torch.__version__,
                "device": str(device),
                "dtype": DTYPES[config.precision],
                "attn_implementation": getattr(model.config, "_attn_implementation", None),
                "torch_compile": section.torch_compile,
                "batch_size": section.batch_size,
                "fixed_output_length": config.fixed_output_length,
                "timing_source": "step_clock",
                "parameters": sum(p.numel() for p in model.parameters()),
            },
        )
        return TransformersEngine(config, model, device, info)
    except BaseException:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise
