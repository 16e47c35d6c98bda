"""Per-request timing records: what an engine reports for each generated request."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RequestRecord(BaseModel):
    """Timing and token counts of one request.

    Times are seconds on the monotonic clock of the process that ran the engine (``time.perf_counter``);
    consumers convert them to seconds from inference start. ``token_times_s`` holds one entry per output
    token (the time it became available), so there are ``output_tokens − 1`` inter-token gaps.
    """

    request_index: int = Field(..., description="Position of the request in the prompt set (0-based)")
    input_tokens: int = Field(..., ge=0, description="Prompt tokens fed to the engine (after truncation)")
    output_tokens: int = Field(..., ge=0, description="Generated tokens; padding and tokens after EOS excluded")
    submit_time_s: float = Field(..., description="Request submitted to the engine, s (monotonic)")
    first_token_time_s: float | None = Field(default=None, description="First output token available, s (monotonic)")
    token_times_s: list[float] = Field(default_factory=list, description="Time of each output token, s (monotonic)")
    done_time_s: float = Field(..., description="Last token available / request finished, s (monotonic)")
    finish_reason: str | None = Field(default=None, description="'length', 'eos' or engine-specific")
    process_index: int = Field(default=0, description="Engine process that served the request")

    @property
    def ttft_s(self) -> float | None:
        """Time to first token, s; None when no token was generated."""
        return None if self.first_token_time_s is None else self.first_token_time_s - self.submit_time_s

    @property
    def e2e_s(self) -> float:
        """End-to-end latency, s."""
        return self.done_time_s - self.submit_time_s
