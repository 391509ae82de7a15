"""EngineConfig: every knob of ``ppd-worker`` in one frozen dataclass (the single source of
defaults; the CLI is generated from the field metadata)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DISAGGREGATION_MODES = ("null", "prefill", "decode")
DTYPES = ("auto", "bfloat16", "float32")


class ConfigError(ValueError):
    """A config value is invalid; the message names the field (and so the CLI flag)."""


def _opt(help_text: str, **extra: Any) -> Any:
    return {"help": help_text, **extra}


@dataclass(frozen=True)
class EngineConfig:
    model: str = field(
        default="smollm2",
        metadata=_opt(
            'Model: "smollm2" (SmolLM2-135M-Instruct GGUF, fetched on first use), a .gguf file, '
            'a HF Llama/Qwen2 directory, or "synthetic[:SEED]" (tiny random model for tests).'
        ),
    )
    served_model_name: str | None = field(
        default=None, metadata=_opt("Model name reported by the API; unset = the model's own name.")
    )
    host: str = field(default="127.0.0.1", metadata=_opt("HTTP bind address."))
    port: int = field(default=30000, metadata=_opt("HTTP port."))
    disaggregation_mode: str = field(
        default="null",
        metadata=_opt(
            "SGLang role: null (unified), prefill (computes prompt KV and ships it), "
            "decode (receives KV and generates).",
            choices=DISAGGREGATION_MODES,
        ),
    )
    disaggregation_bootstrap_port: int = field(
        default=8998,
        metadata=_opt(
            "Prefill: port of the KV bootstrap server. Decode: the prefill's port used when a "
            "request carries bootstrap_port null."
        ),
    )
    disaggregation_decode_enable_radix_cache: bool = field(
        default=False,
        metadata=_opt("Decode: keep a radix prefix cache so only the uncached suffix of the KV is transferred."),
    )
    disaggregation_decode_enable_conditional_agg: bool = field(
        default=False,
        metadata=_opt("Decode: accept do_local_prefill requests and prefill them locally over the cached prefix."),
    )
    dtype: str = field(
        default="auto",
        metadata=_opt(
            "Weights/KV dtype. auto = bfloat16 on CUDA or a CPU with avx512_bf16/AMX, else float32.", choices=DTYPES
        ),
    )
    device: str = field(default="cpu", metadata=_opt("torch device (cpu, cuda, cuda:1, ...)."))
    threads: int = field(default=1, metadata=_opt("torch intra-op threads (0 = torch default)."))
    max_total_tokens: int = field(
        default=32768, metadata=_opt("KV pool capacity in tokens (all requests plus the prefix cache).")
    )
    decode_rows_tokens: int | None = field(
        default=None,
        metadata=_opt(
            "CPU: most tokens of decoding KV kept a second time in contiguous per-sequence rows, "
            "so decode attention reads each context once without gathering it "
            "(unset = max_total_tokens; 0 = off, decode reads the paged pool)."
        ),
    )
    page_size: int = field(default=16, metadata=_opt("Tokens per KV page (allocation and cache unit)."))
    chunked_prefill_size: int = field(
        default=512,
        metadata=_opt(
            "At most this many prompt tokens are computed per step, mixed with the running decode rows, "
            "so a long prefill never stalls decode streams for its whole length."
        ),
    )
    max_running_requests: int = field(
        default=64, metadata=_opt("At most this many requests are admitted (prefilling + decoding) at once.")
    )
    kv_link_gbps: float | None = field(
        default=None,
        metadata=_opt("Prefill: cap the KV send rate (gigabits/s) to emulate a datacenter link on loopback."),
    )
    kv_transfer_same_host: bool = field(
        default=True,
        metadata=_opt(
            "Hand KV to/from a worker on the same host without the socket payload: shared memory "
            "on CPU, CUDA IPC on GPU (TCP stays the control channel and the cross-host path; "
            "--kv-link-gbps forces TCP)."
        ),
    )
    memory_fraction: float | None = field(
        default=None,
        metadata=_opt(
            "CUDA: cap this process's share of the GPU memory (0 < f <= 1), so several workers "
            "share one GPU (torch.cuda.set_per_process_memory_fraction). Ignored on CPU."
        ),
    )
    kv_transfer_timeout: float = field(
        default=60.0, metadata=_opt("Seconds to wait for the other side of a KV transfer before failing the request.")
    )
    warmup: bool = field(
        default=True,
        metadata=_opt(
            "Run every request path of this role once at startup (then flush the cache and reset "
            "metrics) before /health answers 200, so the first real request is not a cold one."
        ),
    )
    enable_cache_report: bool = field(
        default=True, metadata=_opt("Accepted for SGLang compatibility; cached_tokens is always reported.")
    )

    def validate(self) -> EngineConfig:
        def bad(name: str, why: str) -> ConfigError:
            value = getattr(self, name)
            return ConfigError(f"--{name.replace('_', '-')}={value!r}: {why}")

        if self.disaggregation_mode not in DISAGGREGATION_MODES:
            raise bad("disaggregation_mode", f"must be one of {', '.join(DISAGGREGATION_MODES)}")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"must be one of {', '.join(DTYPES)}")
        for name in ("port", "disaggregation_bootstrap_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise bad(name, "must be a TCP port (0-65535)")
        if self.page_size < 1 or self.page_size > 1024:
            raise bad("page_size", "must be in 1..1024")
        if self.max_total_tokens < 2 * self.page_size:
            raise bad("max_total_tokens", "must hold at least two pages")
        if self.chunked_prefill_size < 1:
            raise bad("chunked_prefill_size", "must be >= 1")
        if self.max_running_requests < 1:
            raise bad("max_running_requests", "must be >= 1")
        if self.threads < 0:
            raise bad("threads", "must be >= 0")
        if self.decode_rows_tokens is not None and self.decode_rows_tokens < 0:
            raise bad("decode_rows_tokens", "must be >= 0")
        if self.kv_link_gbps is not None and self.kv_link_gbps <= 0:
            raise bad("kv_link_gbps", "must be > 0")
        if self.memory_fraction is not None and not 0 < self.memory_fraction <= 1:
            raise bad("memory_fraction", "must be in (0, 1]")
        if not (
            self.device == "cpu"
            or self.device == "cuda"
            or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        ):
            raise bad("device", "must be cpu, cuda or cuda:N")
        if self.kv_transfer_timeout <= 0:
            raise bad("kv_transfer_timeout", "must be > 0")
        return self

    @property
    def num_pages(self) -> int:
        return self.max_total_tokens // self.page_size

    @property
    def is_prefill(self) -> bool:
        return self.disaggregation_mode == "prefill"

    @property
    def is_decode(self) -> bool:
        return self.disaggregation_mode == "decode"

    def replace(self, **changes: Any) -> EngineConfig:
        return dataclasses.replace(self, **changes).validate()

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
