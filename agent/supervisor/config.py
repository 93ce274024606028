"""The accelerator supervisor's settings: ``[supervisor]`` in the agent's TOML file.

Only pydantic here (no I/O), so :mod:`agent.config` can import it cheaply. See docs/agent.md,
"Supervised accelerator", for what each setting does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Isolation = Literal["auto", "process", "thread"]


class SupervisorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    isolation: Isolation = Field(
        "auto",
        description="Where a backend runs: process (a supervised worker process), thread (in the "
        "agent), auto (accelerators in a worker, the CPU in the agent).",
    )
    timeout_s: float = Field(
        5.0, gt=0, le=3600, description="Longest an inference may run before its worker is killed."
    )
    timeout_p99_factor: float = Field(
        20.0,
        ge=0,
        description="Once 50 inferences are timed, the limit is this times their p99 (0: always "
        "timeout_s), between timeout_floor_s and timeout_s.",
    )
    timeout_floor_s: float = Field(
        1.0, gt=0, description="The p99-based limit is never shorter than this."
    )
    start_timeout_s: float = Field(
        60.0, gt=0, description="Longest a worker may take to start, load the model and smoke-test."
    )
    max_failures: int = Field(
        3,
        ge=1,
        le=100,
        description="Crashes or hangs within failure_window_s that demote a backend.",
    )
    failure_window_s: float = Field(300.0, gt=0, description="The window failures are counted in.")
    restart_backoff_s: float = Field(
        0.5, ge=0, le=60, description="Wait before the first restart; doubles per failure."
    )
    retry_s: float = Field(
        600.0, gt=0, description="A demoted backend is tried again after this long."
    )
    retry_max_s: float = Field(
        3600.0, gt=0, description="Cap of the retry delay, which doubles while retries fail."
    )

    @model_validator(mode="after")
    def _ordered(self) -> SupervisorConfig:
        if self.timeout_floor_s > self.timeout_s:
            raise ValueError(
                f"timeout_floor_s ({self.timeout_floor_s}) must not exceed timeout_s "
                f"({self.timeout_s})"
            )
        if self.retry_s > self.retry_max_s:
            raise ValueError(
                f"retry_s ({self.retry_s}) must not exceed retry_max_s ({self.retry_max_s})"
            )
        return self
