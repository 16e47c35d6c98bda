"""ExperimentConfig: everything that defines a measurement, and nothing else.

Runtime-only settings (output paths, GPU indices or the simulated device, DuckDB path, timeouts)
are deliberately absent, so ``compute_measurement_config_hash(config)`` depends only on what was
measured. Every model forbids unknown keys and rejects NaN and ±inf in every float field (a config
must survive its JSON form: JSON has no NaN or inf, so such a value could not be stored and re-read
to the same hash); validation errors name the field path and the value.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llem_pipeline.domain.errors import short

Backend = Literal["pytorch", "vllm", "tensorrt"]
Precision = Literal["fp32", "fp16", "bf16"]
BUILTIN_DATASETS = ("builtin",)


class _Strict(BaseModel):
    # allow_inf_nan=False: every float field (tuple items included) rejects NaN, inf and -inf.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class SyntheticDatasetConfig(_Strict):
    """Synthetic fixed-length prompts (like vLLM bench's 'random' set): random token ids from the vocabulary."""

    input_len: int = Field(default=128, ge=1, le=131072, description="Prompt length, tokens")
    output_len: int | None = Field(
        default=None, ge=1, description="Requested output length, tokens; when set it must equal max_output_tokens"
    )
    seed: int = Field(default=0, description="Seed of the random token ids")


class DecoderConfig(_Strict):
    """Decoding settings shared by all engines. Greedy when temperature is 0."""

    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 = greedy")
    do_sample: bool = Field(default=False, description="Sample (True) or greedy (False)")
    top_k: int = Field(default=50, ge=0, description="Top-k (0 = off); sampling only")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus top-p; sampling only")
    repetition_penalty: float = Field(default=1.0, ge=0.1, le=10.0, description="Repetition penalty (1.0 = off)")

    @model_validator(mode="after")
    def _greedy_consistent(self) -> DecoderConfig:
        if self.do_sample and self.temperature == 0.0:
            raise ValueError(
                "decoder.do_sample=True with decoder.temperature=0.0 is contradictory: "
                "set temperature > 0 to sample, or do_sample=False for greedy decoding"
            )
        if not self.do_sample and self.temperature > 0.0:
            raise ValueError(
                f"decoder.temperature={self.temperature} has no effect with decoder.do_sample=False: "
                "set do_sample=True to sample, or temperature=0 for greedy decoding"
            )
        return self

    @property
    def greedy(self) -> bool:
        """True when decoding is greedy (temperature 0 / no sampling)."""
        return not self.do_sample


class WarmupConfig(_Strict):
    """Warmup before the window: a fixed count, or until request latency converges (CV mode)."""

    enabled: bool = Field(default=True, description="Run warmup requests before the window")
    mode: Literal["fixed", "cv"] = Field(default="fixed", description="'fixed' count or 'cv' convergence")
    n_warmup: int = Field(default=5, ge=1, le=10000, description="Fixed mode: full-length warmup requests")
    cv_target: float = Field(default=0.05, gt=0.0, le=1.0, description="CV mode: latency CV target (unitless)")
    window: int = Field(default=5, ge=2, description="CV mode: requests in the rolling CV window")
    max_prompts: int = Field(default=20, ge=1, description="CV mode: upper bound on warmup requests")
    thermal_floor_seconds: float = Field(
        default=60.0, ge=0.0, le=3600.0, description="Wait after warmup, s (0 allowed for tests)"
    )

    @model_validator(mode="after")
    def _window_fits(self) -> WarmupConfig:
        if self.mode == "cv" and self.window > self.max_prompts:
            raise ValueError(
                f"warmup.window={self.window} exceeds warmup.max_prompts={self.max_prompts}: "
                "the CV window must fit within max_prompts"
            )
        return self


class BaselineConfig(_Strict):
    """Idle power of the devices, measured before the model loads and cached per GPU UUID."""

    enabled: bool = Field(default=True, description="Measure idle power and report adjusted energy")
    duration_seconds: float = Field(default=30.0, gt=0.0, le=600.0, description="Idle measurement length, s")
    cache_ttl_seconds: float = Field(default=3600.0, ge=0.0, description="Reuse a cached idle power this long, s")


class EnergyConfig(_Strict):
    """Sampling and windowing of the energy measurement."""

    sample_interval_ms: float = Field(default=100.0, ge=1.0, le=10000.0, description="Sampler period, ms")
    methodology: Literal["total", "steady_state", "windowed"] = Field(
        default="total", description="Report the whole window, the detected steady state, or an explicit window"
    )
    window: tuple[float, float] | None = Field(
        default=None, description="'windowed' only: (start, end), s from inference start"
    )
    steady_state_cv: float = Field(
        default=0.05, gt=0.0, le=1.0, description="Steady state: rolling power CV threshold (unitless)"
    )
    steady_state_min_samples: int = Field(
        default=10, ge=3, description="Steady state: samples in the rolling window"
    )
    boundary_correction: bool = Field(
        default=True, description="Correct the counter's partial update steps at both window boundaries"
    )

    @model_validator(mode="after")
    def _window_matches(self) -> EnergyConfig:
        if self.methodology == "windowed":
            if self.window is None:
                raise ValueError("energy.window is required when energy.methodology='windowed': give [start, end] in s")
            start, end = self.window
            if not (0.0 <= start < end):
                raise ValueError(f"energy.window={list(self.window)} must satisfy 0 <= start < end (s from inference start)")
        elif self.window is not None:
            raise ValueError(
                f"energy.window={list(self.window)} is only used with energy.methodology='windowed' "
                f"(got {self.methodology!r}): remove it or set methodology: windowed"
            )
        return self


class PyTorchConfig(_Strict):
    """transformers engine (backend 'pytorch')."""

    batch_size: int = Field(default=1, ge=1, le=4096, description="Requests per generate() call")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flash_attention_3"] | None = Field(
        default=None, description="Attention kernel; None = the library default"
    )
    device_map: str | None = Field(default=None, description="transformers device_map; None = the one assigned device")
    torch_compile: bool = Field(default=False, description="Wrap the model in torch.compile")
    torch_compile_mode: Literal["default", "reduce-overhead", "max-autotune"] | None = Field(
        default=None, description="torch.compile mode (needs torch_compile)"
    )
    load_in_8bit: bool = Field(default=False, description="bitsandbytes 8-bit weights")
    load_in_4bit: bool = Field(default=False, description="bitsandbytes 4-bit weights")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] | None = Field(default=None, description="4-bit quant type")
    use_cache: bool = Field(default=True, description="Use the KV cache")
    num_processes: int = Field(default=1, ge=1, le=64, description="Data parallelism: engine processes, one device each")
    trust_remote_code: bool = Field(default=False, description="Allow model repositories to run their own code")
    revision: str | None = Field(default=None, description="Model revision (commit, tag or branch)")

    @model_validator(mode="after")
    def _combinations(self) -> PyTorchConfig:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("pytorch.load_in_4bit and pytorch.load_in_8bit are mutually exclusive: choose one")
        if self.torch_compile_mode is not None and not self.torch_compile:
            raise ValueError(
                f"pytorch.torch_compile_mode={self.torch_compile_mode!r} needs pytorch.torch_compile=true"
            )
        if self.bnb_4bit_quant_type is not None and not self.load_in_4bit:
            raise ValueError(
                f"pytorch.bnb_4bit_quant_type={self.bnb_4bit_quant_type!r} needs pytorch.load_in_4bit=true"
            )
        return self


class VLLMConfig(_Strict):
    """vLLM engine: ``LLM(...)`` arguments and ``SamplingParams`` extras. ignore_eos follows fixed_output_length."""

    # LLM(...) arguments
    tensor_parallel_size: int = Field(default=1, ge=1, le=64, description="LLM(tensor_parallel_size)")
    pipeline_parallel_size: int = Field(default=1, ge=1, le=64, description="LLM(pipeline_parallel_size)")
    max_num_seqs: int | None = Field(default=None, ge=1, description="LLM(max_num_seqs): concurrent sequences")
    max_num_batched_tokens: int | None = Field(default=None, ge=1, description="LLM(max_num_batched_tokens)")
    max_model_len: int | None = Field(default=None, ge=1, description="LLM(max_model_len), tokens")
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0, description="LLM(gpu_memory_utilization)")
    enforce_eager: bool = Field(default=False, description="LLM(enforce_eager): no CUDA graphs")
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = Field(default="auto", description="LLM(kv_cache_dtype)")
    enable_prefix_caching: bool | None = Field(default=None, description="LLM(enable_prefix_caching); None = default")
    enable_chunked_prefill: bool | None = Field(default=None, description="LLM(enable_chunked_prefill)")
    block_size: Literal[8, 16, 32] | None = Field(default=None, description="LLM(block_size)")
    quantization: str | None = Field(default=None, description="LLM(quantization), e.g. 'awq', 'fp8'")
    swap_space: float | None = Field(default=None, ge=0.0, description="LLM(swap_space), GiB")
    trust_remote_code: bool = Field(default=False, description="LLM(trust_remote_code)")
    # SamplingParams extras
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0, description="SamplingParams(presence_penalty)")
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0, description="SamplingParams(frequency_penalty)")


class TensorRTConfig(_Strict):
    """TensorRT-LLM: accepted by the schema; not available in this release (choosing it fails before anything runs)."""

    max_batch_size: int = Field(default=8, ge=1, description="Engine max batch size")
    tp_size: int = Field(default=1, ge=1, description="Tensor parallel size")
    quantization: Literal["int8_sq", "int4_awq", "fp8"] | None = Field(default=None, description="Quantisation")
    engine_path: str | None = Field(default=None, description="Prebuilt engine directory")


_SECTIONS: dict[str, type[_Strict]] = {"pytorch": PyTorchConfig, "vllm": VLLMConfig, "tensorrt": TensorRTConfig}


class ExperimentConfig(_Strict):
    """Everything that defines one measurement. Hash it with compute_measurement_config_hash()."""

    model: str = Field(..., min_length=1, description="Hugging Face model id or local model directory")
    backend: Backend = Field(default="pytorch", description="Inference engine")
    n: int = Field(default=100, ge=1, le=1_000_000, description="Measured prompts (requests)")
    dataset: str | SyntheticDatasetConfig = Field(
        default="builtin", description="'builtin' (shipped prompt set), a path to a .jsonl file, or synthetic settings"
    )
    max_input_tokens: int = Field(default=512, ge=1, le=1_048_576, description="Prompts are truncated to this, tokens")
    max_output_tokens: int = Field(default=128, ge=1, le=1_048_576, description="Generation limit per request, tokens")
    fixed_output_length: bool = Field(
        default=True, description="Ignore EOS so every request generates exactly max_output_tokens"
    )
    precision: Precision = Field(default="bf16", description="Weights and compute precision")
    random_seed: int = Field(default=42, description="Seed for torch / vLLM sampling and prompt selection")
    decoder: DecoderConfig = Field(default_factory=DecoderConfig, description="Decoding settings")
    warmup: WarmupConfig = Field(default_factory=WarmupConfig, description="Warmup settings")
    baseline: BaselineConfig = Field(default_factory=BaselineConfig, description="Idle baseline settings")
    energy: EnergyConfig = Field(default_factory=EnergyConfig, description="Energy sampling and windows")
    pytorch: PyTorchConfig | None = Field(default=None, description="Engine section for backend 'pytorch'")
    vllm: VLLMConfig | None = Field(default=None, description="Engine section for backend 'vllm'")
    tensorrt: TensorRTConfig | None = Field(default=None, description="Engine section for backend 'tensorrt'")

    @model_validator(mode="before")
    @classmethod
    def _default_engine_section(cls, data: Any) -> Any:
        """Fill the engine section of the chosen backend with its defaults when it is absent."""
        if isinstance(data, dict):
            backend = data.get("backend", "pytorch")
            if isinstance(backend, str) and backend in _SECTIONS and data.get(backend) is None:
                data = {**data, backend: {}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        for name in _SECTIONS:
            if name != self.backend and getattr(self, name) is not None:
                raise ValueError(
                    f"section '{name}' does not match backend={self.backend!r}: "
                    f"remove '{name}' or set backend: {name}"
                )
        if isinstance(self.dataset, str) and self.dataset not in BUILTIN_DATASETS and not self.dataset.endswith(".jsonl"):
            raise ValueError(
                f"dataset={short(self.dataset)} is not allowed: use 'builtin', a path ending in .jsonl, "
                "or {input_len, output_len, seed} for synthetic prompts"
            )
        if isinstance(self.dataset, SyntheticDatasetConfig):
            if self.dataset.output_len is not None and self.dataset.output_len != self.max_output_tokens:
                raise ValueError(
                    f"dataset.output_len={self.dataset.output_len} differs from max_output_tokens={self.max_output_tokens}: "
                    "set them equal or drop dataset.output_len"
                )
            if self.dataset.input_len > self.max_input_tokens:
                raise ValueError(
                    f"dataset.input_len={self.dataset.input_len} exceeds max_input_tokens={self.max_input_tokens}: "
                    "raise max_input_tokens or shorten input_len"
                )
        if self.backend == "vllm" and self.vllm is not None:
            if self.vllm.max_model_len is not None and self.vllm.max_model_len < self.max_input_tokens + self.max_output_tokens:
                raise ValueError(
                    f"vllm.max_model_len={self.vllm.max_model_len} is smaller than max_input_tokens + max_output_tokens "
                    f"= {self.max_input_tokens + self.max_output_tokens}: raise max_model_len or lower the token limits"
                )
        if self.backend == "pytorch" and self.pytorch is not None:
            if (self.pytorch.load_in_4bit or self.pytorch.load_in_8bit) and self.precision == "fp32":
                raise ValueError(
                    "precision='fp32' with pytorch.load_in_4bit/load_in_8bit is contradictory: "
                    "quantised weights compute in fp16/bf16; set precision to fp16 or bf16"
                )
        if self.energy.methodology == "steady_state" and self.n < 2:
            raise ValueError(f"energy.methodology='steady_state' needs n >= 2 requests (got n={self.n})")
        return self

    @property
    def engine_section(self) -> PyTorchConfig | VLLMConfig | TensorRTConfig:
        """The engine section of the chosen backend (always present after validation)."""
        section = getattr(self, self.backend)
        assert section is not None
        return section

    @property
    def num_processes(self) -> int:
        """Engine processes this config runs (data parallelism; 1 except pytorch.num_processes > 1)."""
        return self.pytorch.num_processes if self.backend == "pytorch" and self.pytorch else 1

    @property
    def devices_per_process(self) -> int:
        """Devices each engine process uses (vLLM tensor × pipeline parallelism, else 1)."""
        if self.backend == "vllm" and self.vllm:
            return self.vllm.tensor_parallel_size * self.vllm.pipeline_parallel_size
        if self.backend == "tensorrt" and self.tensorrt:
            return self.tensorrt.tp_size
        return 1
