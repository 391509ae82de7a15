"""One simulated turn: what was asked, where the policy sent it, and what happened (times in ms)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SimRequest:
    rid: int
    conversation_id: str
    turn: int  # 1-based
    arrival_ms: float
    prompt_tokens: int  # whole history + this turn's new input
    input_tokens: int  # this turn's new input
    output_tokens: int  # the answer's length (cut at the client's max_tokens)
    max_new_tokens: int = 0  # what the router was told (the client's max_tokens; the true length if exact)
    expected_output_tokens: int = 0  # the answer length the router's decision assumed (Decision.output_tokens)
    cut: bool = False  # the answer was longer than the client's max_tokens and stopped there
    # the decision
    route: str = ""
    decode: str | None = None  # the worker that streams the answer
    prefill: str | None = None
    predicted_ttft_ms: float = 0.0
    predicted_tpot_ms: float = 0.0
    predicted_compute_ms: float | None = None  # the prefill compute inside predicted_ttft_ms (Candidate.compute_ms)
    reason: str = ""
    # what happened
    cached_tokens: int = 0  # prompt tokens the serving worker found cached (reported to the session table)
    prefill_cached_tokens: int = 0  # on the prefill worker (pd)
    computed_tokens: int = 0  # prompt tokens actually prefilled (P for pd; D for local; unified for replica)
    kv_bytes: int = 0  # moved over the P->D link
    first_token_ms: float | None = None
    finish_ms: float | None = None
    # progress inside a worker
    remaining_prefill: int = 0
    pinned_tokens: int = 0  # KV slots pinned on the serving worker

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_ms is None else self.first_token_ms - self.arrival_ms

    @property
    def tpot_ms(self) -> float | None:
        if self.first_token_ms is None or self.finish_ms is None or self.output_tokens < 2:
            return None
        return (self.finish_ms - self.first_token_ms) / (self.output_tokens - 1)

    @property
    def e2e_ms(self) -> float | None:
        return None if self.finish_ms is None else self.finish_ms - self.arrival_ms
