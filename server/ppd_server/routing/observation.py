"""One completed turn as the router saw it (:class:`Observation`), and the features the cost
model's fits read from it: what ``CostModel.observe`` consumes.

The features match the predictions in ``routing/latency.py`` term by term: prefill
``(1, new, new*(new+cached)/1e6)``, decode step ``(1, streams, context/1000)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ppd_server.routing.types import RouteName


@dataclass(frozen=True, slots=True)
class Observation:
    """One completed turn as the router saw it.

    ``new_tokens + cached_tokens`` is the prompt; ``cached_tokens`` is the worker-reported hit
    (``usage.prompt_tokens_details.cached_tokens``). For ``pd`` that figure is the decode
    worker's hit plus the prefill worker's, so pass ``prefill_cached_tokens`` (``meta_info``
    ``cached_tokens_details.prefill``) when known: the prefill fit then uses what P really
    computed. ``decode_running``: streams running on the decode (or unified)
    worker when the request was routed; ``decode_context_tokens`` their total context, not
    counting this request (``WorkerView.running_context_tokens``; 0 with streams running =
    unknown); ``completion_tokens`` the answer's length; ``decode_running_end``, when known, the
    same count when the turn finished (the
    TPOT fit then uses the mean of the two: streams that joined or left during the answer
    shaped its decode steps). ``predicted_*``: the chosen candidate's prediction from the Decision;
    ``predicted_compute_ms`` the prefill compute inside its TTFT (``Candidate.compute_ms``), so the
    prefill fit takes off the rest (queue, transfer, D's iteration in flight) as the decision priced it,
    not as coefficients refitted since would (None: recomputed from the current coefficients).
    ``tpot_ms`` is None for a one-token answer.

    Non-streamed answers have no first-token time: pass ``ttft_ms=None`` with ``e2e_ms`` and
    ``completion_tokens``. A one-token answer's end-to-end time is its TTFT; for longer answers
    the time past the predicted TTFT, per extra token, is taken as the TPOT (decode steps
    dominate), and the prefill fit is left alone.
    """

    route: RouteName
    decode_url: str | None
    prefill_url: str | None
    new_tokens: int
    cached_tokens: int
    ttft_ms: float | None
    tpot_ms: float | None
    decode_running: int
    predicted_ttft_ms: float | None = None
    predicted_tpot_ms: float | None = None
    kv_bytes: int = 0
    decode_context_tokens: int = 0
    prefill_cached_tokens: int | None = None
    e2e_ms: float | None = None
    completion_tokens: int = 0
    decode_running_end: int | None = None
    predicted_compute_ms: float | None = None


def from_end_to_end(obs: Observation) -> Observation | None:
    """TTFT/TPOT recovered from a non-streamed turn's end-to-end time (see Observation)."""
    if obs.e2e_ms is None or not obs.e2e_ms > 0:
        return None
    steps = obs.completion_tokens - 1
    if steps <= 0:  # a one-token answer: end to end is the first token
        return replace(obs, ttft_ms=obs.e2e_ms, tpot_ms=None)
    if obs.predicted_ttft_ms is None:
        return None
    # with several tokens the decode steps dominate: attribute the time past the predicted first
    # token to them (a prefill miss spreads thinly over the steps) and leave the prefill fit alone
    return replace(obs, tpot_ms=max(obs.e2e_ms - obs.predicted_ttft_ms, 0.0) / steps)


def prefill_features(new: int, cached: int) -> tuple[float, float, float]:
    return 1.0, float(new), new * (new + cached) / 1e6


def decode_features(obs: Observation) -> tuple[float, float, float]:
    """The decode-step features of the answer's steps, as ``latency.estimate_*`` predicts them:
    (1, streams incl. this one, context / 1000) where the context is the other streams' plus
    this stream's prompt and half its answer (the mean over its steps)."""
    at_start = max(obs.decode_running, 0)
    running: float = at_start
    if obs.decode_running_end is not None:  # the batch the stream actually decoded in
        running = (at_start + max(obs.decode_running_end, 0)) / 2
    prompt = obs.new_tokens + obs.cached_tokens
    if at_start > 0 and obs.decode_context_tokens > 0:  # the others' context, rescaled to the mean batch
        others = obs.decode_context_tokens * running / at_start
    else:  # unknown, or streams that joined an idle worker later: contexts like this one
        others = running * prompt
    context = others + prompt + max(obs.completion_tokens, 0) // 2
    return 1.0, running + 1.0, context / 1000.0
