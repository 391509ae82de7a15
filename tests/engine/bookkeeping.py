"""Helpers for model-free scheduler tests: requests with a byte 'tokenizer' and a fake step."""

from __future__ import annotations

import itertools

from ppd_engine.request import Mode, Req
from ppd_engine.sampling import SamplingParams
from ppd_engine.scheduler import Scheduler, Step
from ppd_engine.stopping import OutputTracker

EOS = 0
_ids = itertools.count()


def decode_bytes(ids: list[int], skip_special_tokens: bool = True) -> str:
    return "".join(chr(96 + i % 26) for i in ids if not (skip_special_tokens and i == EOS))


def make_req(prompt: list[int], max_new: int = 4, mode: Mode = Mode.LOCAL, **sampling) -> Req:
    params = SamplingParams(max_new_tokens=max_new, temperature=0.0, **sampling)
    return Req(
        rid=f"r{next(_ids)}",
        prompt_ids=list(prompt),
        sampling=params,
        tracker=OutputTracker(params, [EOS], decode_bytes),
        mode=mode,
    )


def run_step(scheduler: Scheduler, token: int = 1) -> Step:
    """One scheduler step with a 'model' that always samples ``token``."""
    step = scheduler.schedule()
    scheduler.on_forward_done(step, [token] * len(step.rows))
    return step


def pages_accounted(scheduler: Scheduler) -> int:
    cached = scheduler.cache.num_pages if scheduler.cache else 0
    owned = sum(len(r.pages) - r.num_prefix_tokens // scheduler.page_size for r in scheduler.active)
    return scheduler.allocator.num_free + cached + owned
