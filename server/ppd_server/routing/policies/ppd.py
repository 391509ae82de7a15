"""``ppd`` (the default): the PPD cost rule with live load, per-request weights and SLO limits.

For a turn 2+ request whose decode worker can prefill locally, both routes are predicted by the
latency model (see ``routing/latency.py``) and scored as in the PPD paper:

    S = w_ttft * (TTFT_pd - TTFT_local) / TTFT_pd  -  w_tpot * (TPOT_local - TPOT_pd) / TPOT_pd

D-local iff ``S > margin`` (margin 0 by default). The weights are the request's (``ppd.weights``
or a preset) multiplied by this policy's ``w_ttft`` / ``w_tpot`` (operator-wide scaling, 1.0):
:meth:`PPDPolicy.score_weights`, recorded on the Decision and the router's span.
TPOT(local) is priced with every local prefill already committed to the decode worker (see
``latency.py``), so a burst of individually cheap local turns is seen for what it costs.

S also charges local (in ms, over TTFT_pd, at w_ttft) with what it costs other turns:

* the delay its append adds to the first token of every request waiting on the holder
  (``waiting_reqs``: P->D streams whose KV is on its way, queued local prefills) and of the P->D
  streams that land on the holder, whose wait for the iteration in flight grows
  (:func:`join_delay_ms`: rate x append x (append/2 + step));
* with a TPOT target, the prefill it leaves behind on the conversation's prefill worker
  (:func:`stale_prefill_ms`: a later P->D turn re-prefills this turn's tokens there), weighted by
  how likely the next turn goes P->D: the holder's budget use squared (:func:`budget_pd_chance`).
  Without a target nothing sends a continuation P->D but S itself, and the next turn's S is
  about this one's: a conversation that goes local stays local, and if it ever goes P->D, that
  turn's own TTFT(pd) prices the catch-up prefill. Charging it now as well counted it twice, and
  grew with every local turn until it forced a P->D turn that paid it all (live, 1P1D
  long-context-cpu: `pd: S=-0.07 (ttft 166ms vs 701ms, ..., stale P +538ms)`, measured 1,641 ms).

With a TPOT target (``slo.tpot_ms``), before S is looked at:

1. the holder's local-prefill budget per iteration (``latency.local_tpot_budget``, at ``headroom``
   x the target: the target binds every request, the prediction is a mean) must take the
   committed local prefill plus this append, or the turn goes P->D - unless P->D is predicted
   to break the TTFT target and local to meet it (then the budget at the target itself, without
   the headroom, decides: a turn P->D would lose is worth the headroom), or P->D is hopeless
   (prefill-bound and predicted past ``HOPELESS`` x the TTFT target: the model cannot rank two
   routes that both miss) and the append short (``STATIC_LOCAL_TOKENS``): then local, the static
   ``threshold:512`` rule, even over a saturated decode pool (P->D would miss for sure, and
   lengthen the prefill queue of every turn after it);
2. when the decode side is the bottleneck - every decode worker near the target while the P->D
   route has TTFT to spare - the turn goes P->D: prefill workers have the slack, decode does not.

Then, with a TTFT target: when P->D breaks it and local's TTFT is at most ``PREFILL_BOUND`` of
P->D's, the prefill side is the bottleneck: local, whatever S says.

Absolute SLO targets are then hard limits: a route predicted to break a target the other route
meets loses whatever S says. Without targets the weights decide. The reason names S and the
predictions, e.g. ``local: S=+0.41 (ttft 38ms vs 212ms, tpot +6%)``.

Needs: live load on the decode and prefill workers, their cost coefficients, the session's
cached-token counts, the router's local requests in flight per decode worker. Parameters:
``w_ttft`` (float >= 0), ``w_tpot`` (float >= 0), ``margin`` (float, -1..1), ``headroom``
(float, 0.1..1: the share of a TPOT target the budget fills).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ppd_sdk.wire import Weights
from ppd_server.routing.latency import (
    expected_output_tokens,
    iteration_wait_ms,
    joined_tpot_ms,
    local_tpot_budget,
    prefill_ms,
)
from ppd_server.routing.policies.base import Options, Policy, fmt_ms
from ppd_server.routing.types import Candidate, RequestView, RouteName, WorkerView


def ppd_score(local: Candidate, pd: Candidate, w_ttft: float, w_tpot: float) -> float:
    """The PPD paper's S: positive when D-local is better under the given weights."""
    d_ttft = (pd.ttft_ms - local.ttft_ms) / max(pd.ttft_ms, 1e-9)
    d_tpot = (local.tpot_ms - pd.tpot_ms) / max(pd.tpot_ms, 1e-9)
    return w_ttft * d_ttft - w_tpot * d_tpot


def slo_breaches(c: Candidate, request: RequestView) -> list[str]:
    """Human descriptions of the absolute targets ``c`` is predicted to miss."""
    out = []
    slo = request.slo
    if slo.ttft_ms is not None and c.ttft_ms > slo.ttft_ms:
        out.append(f"ttft {fmt_ms(c.ttft_ms)} > SLO {fmt_ms(slo.ttft_ms)}")
    if slo.tpot_ms is not None and c.tpot_ms > slo.tpot_ms:
        out.append(f"tpot {fmt_ms(c.tpot_ms)} > SLO {fmt_ms(slo.tpot_ms)}")
    return out


#: the decode pool is saturated when even its least loaded worker runs a joining stream at this
#: share of the (headroom'd) TPOT target
DECODE_SATURATED = 0.9
#: the prefill side is the bottleneck when P->D breaks the TTFT target and local's TTFT is at most
#: this share of P->D's: then local, whatever S says (within the TPOT budget: decode streams first)
PREFILL_BOUND = 0.5
#: P->D is hopeless when, prefill-bound, its predicted TTFT is past this multiple of the target
#: (1P3D mixed 32/s, 20 s: 1x 97.0%, 2x 91.7%, 3x 83.6% SLO attainment, threshold:512 99.2%).
#: It goes local over the TPOT budget even when every decode worker is near the target: a turn
#: P->D is sure to lose, and it lengthens the prefill queue of every turn after it (1P3D mixed
#: 32/s, seeds 0-2: 90.1% -> 94.5%, threshold:512 94.8%). A guard against a saturated decode pool
#: was needed while the prefill queue was priced from the lagging load poll (2P2D mixed 32/s fell
#: 97.5% -> 62.6% without it, on falsely hopeless P->D turns); with the router's own prefills in
#: flight it costs that cell nothing (55.6% either way, pd 57.1%).
HOPELESS = 1.0
#: ... and then an append of at most this many uncached tokens goes local over the TPOT budget
STATIC_LOCAL_TOKENS = 512


def pd_share(holder: WorkerView) -> float:
    """How likely a turn on ``holder`` goes P->D: the share of its in-flight requests that are not
    local (0 when nothing is in flight: nothing says they do)."""
    if holder.inflight <= 0:
        return 0.0
    return 1.0 - min(1.0, max(holder.local_prefill_reqs, 0) / holder.inflight)


def budget_pd_chance(need_ms: float, budget_ms: float) -> float:
    """How likely the conversation's next turn goes P->D, under a TPOT target: the share of the
    holder's local-prefill budget used once it takes this turn (``latency.local_tpot_budget``),
    squared. The budget is one thing that sends a continuation P->D (an idle holder never
    refuses; a full one always does), and the next turn finds the holder about as loaded as this
    one leaves it. Squared because a use well below 1 is rarely refused (the committed load comes
    and goes with the streams). 1 when there is no budget at all. It misses the other thing, S
    itself: in 3P1D huge_paste 8/s ~60% of the turns after a local turn go P->D on S (its
    ``others`` charge swings from turn to turn) while this says 0-0.1; the measured chance did
    not fix that cell either (routing/README.md, "Proving it")."""
    if budget_ms <= 0.0:
        return 1.0
    u = min(1.0, max(need_ms, 0.0) / budget_ms)
    return u * u


def stale_prefill_ms(opts: Options, p_next_pd: float) -> float:
    """The prefill a D-local turn leaves for a later P->D turn of its conversation.

    Going local, the conversation's prefill worker does not see this turn: it lacks the tokens
    P->D would have prefilled now (``pd.prefill_tokens``; the answer it lacks either way). The
    next turn that goes P->D prefills them there on top of its own (per token and attention, no
    second base). Weighted by ``p_next_pd``, how likely that next turn goes P->D
    (:func:`budget_pd_chance` under a TPOT target, which sees the budget's refusals and not S's;
    the share of the holder's in-flight requests that are not local was self-fulfilling: with
    nothing local in flight it says 1, and no local turn starts to lower it)."""
    pd, holder, cluster = opts.pd, opts.holder, opts.cluster
    if pd is None or holder is None or cluster is None:
        return 0.0
    p = cluster.get(pd.prefill)
    weight = min(max(p_next_pd, 0.0), 1.0)
    if p is None or weight <= 0.0 or pd.prefill_tokens <= 0:
        return 0.0
    c = p.coefficients
    extra = prefill_ms(c, pd.prefill_tokens, max(pd.cached_tokens, 0)) - c.prefill_base_ms
    return max(extra, 0.0) * weight


def join_delay_ms(opts: Options, append_ms: float) -> float:
    """The first-token delay a local append adds to the P->D streams landing on the holder.

    A P->D stream's first token goes out when the iteration in flight at its KV's landing ends:
    it waits that iteration's remainder, on average ``sum(I^2) / (2 sum(I))`` over the
    iterations ``I``. The append turns one decode step ``d`` into a mixed iteration about
    ``d + append`` long, so over the landings at rate ``r`` the waits grow by
    ``r x ((d + append)^2 - d^2) / 2 = r x append x (append/2 + d)``: the landings during the
    append wait its remainder, and the step it rides in is longer for every landing in it. The
    rate by Little's law: the holder's non-local in-flight requests over how long one stays in
    flight (TTFT + answer x TPOT). (Issue 7, 3P1D mid_bal 16/s seed 0: 201 local turns raised the
    P->D first tokens' wait at the decode worker by ~0.5 ms each over ~1,650 of them, ~4 ms per
    local turn; ``append^2/2`` alone priced ~1.5.)"""
    pd, holder = opts.pd, opts.holder
    if pd is None or holder is None or append_ms <= 0.0:
        return 0.0
    streams = holder.inflight * pd_share(holder)
    life_ms = pd.ttft_ms + expected_output_tokens(opts.request, opts.session) * pd.tpot_ms
    step_ms = 2.0 * iteration_wait_ms(holder)  # the holder's decode step now (0 when idle)
    return streams / max(life_ms, 1e-9) * append_ms * (append_ms / 2.0 + step_ms)


class PPDPolicy(Policy):
    name = "ppd"
    defaults: ClassVar[dict[str, Any]] = {"w_ttft": 1.0, "w_tpot": 1.0, "margin": 0.0, "headroom": 0.85}

    def validate_params(self, params: dict[str, Any]) -> None:
        for key in ("w_ttft", "w_tpot"):
            if not 0.0 <= params[key] <= 1000.0:
                raise ValueError(f"policy 'ppd' parameter {key} must be in [0, 1000], got {params[key]!r}")
        if not -1.0 <= params["margin"] <= 1.0:
            raise ValueError(f"policy 'ppd' parameter margin must be in [-1, 1], got {params['margin']!r}")
        if not 0.1 <= params["headroom"] <= 1.0:
            raise ValueError(f"policy 'ppd' parameter headroom must be in [0.1, 1], got {params['headroom']!r}")

    def score_weights(self, request: RequestView) -> Weights:
        """The request's weights scaled by this policy's operator-wide ``w_ttft`` / ``w_tpot``."""
        scale_ttft, scale_tpot = self._params["w_ttft"], self._params["w_tpot"]
        if scale_ttft == 1.0 and scale_tpot == 1.0:
            return request.weights
        w = request.weights
        return Weights.model_construct(ttft=scale_ttft * w.ttft, tpot=scale_tpot * w.tpot)

    def choose(self, opts: Options) -> tuple[RouteName, float | None, str]:
        assert opts.local is not None and opts.pd is not None and opts.holder is not None
        req, local, pd, holder = opts.request, opts.local, opts.pd, opts.holder
        w = self.score_weights(req)
        w_ttft, w_tpot = w.ttft, w.tpot
        slo = req.slo
        # the append also delays the first token of every request waiting on the holder (P->D
        # streams whose KV is on its way, queued local prefills): a cost S for this turn alone misses
        # and P->D streams landing on the holder wait longer for the iteration in flight (join_delay_ms)
        append_ms = prefill_ms(holder.coefficients, local.prefill_tokens, local.cached_tokens)
        others_ms = append_ms * max(holder.waiting_reqs, 0) + join_delay_ms(opts, append_ms)
        # ... and, with a TPOT target, leaves the conversation's prefill worker behind by this turn:
        # a later P->D turn re-prefills it there (issue 7: P->D turns' prefill grew 28 -> 32 ms in
        # 3P1D big_paste 8/s), as likely as the holder's budget use once it takes this turn, squared
        # (the budget is what sends turns P->D; without a target nothing does: no charge)
        budgets = None
        stale_ms = 0.0
        if slo.tpot_ms is not None:
            budgets = local_tpot_budget(req, opts.session, holder, self._params["headroom"] * slo.tpot_ms)
            stale_ms = stale_prefill_ms(opts, budget_pd_chance(*budgets))
        s = ppd_score(local, pd, w_ttft, w_tpot) - w_ttft * (others_ms + stale_ms) / max(pd.ttft_ms, 1e-9)
        detail = ""
        if self.explain:
            extra = (f", others +{fmt_ms(others_ms)}" if others_ms else "") + (
                f", stale P +{fmt_ms(stale_ms)}" if stale_ms else ""
            )
            detail = f"S={s:+.2f} ({self.describe(local, pd)}{extra})"
        if slo.tpot_ms is not None:
            # the holder's local-prefill budget keeps all its streams under the target (with headroom:
            # the target binds every request, the prediction is a mean)
            assert budgets is not None
            need, budget = budgets
            if need > budget and self._pd_misses_ttft(local, pd, req):
                # the headroom keeps streams well inside the target; a turn P->D would lose is worth it
                need_t, budget_t = local_tpot_budget(req, opts.session, holder, slo.tpot_ms)
                if need_t <= budget_t:
                    return (
                        "local",
                        s,
                        f"local: P->D breaks the TTFT SLO ({fmt_ms(pd.ttft_ms)} > {fmt_ms(slo.ttft_ms or 0)}), local "
                        f"fits {holder.url}'s TPOT budget at the target itself ({fmt_ms(need_t)} <= "
                        f"{fmt_ms(budget_t)} per step); {detail}",
                    )
            if need > budget and self._hopeless_pd(local, pd, req):
                return (
                    "local",
                    s,
                    (
                        f"local: P->D hopeless (TTFT {fmt_ms(pd.ttft_ms)} > {HOPELESS:g}x SLO) and the append is short "
                        f"({local.prefill_tokens} <= {STATIC_LOCAL_TOKENS} tokens), over the TPOT budget "
                        f"(local prefill {fmt_ms(need)} > {fmt_ms(budget)} per step); {detail}"
                    ),
                )
            if need > budget:
                return (
                    "pd",
                    s,
                    f"pd: over {holder.url}'s TPOT budget for the SLO "
                    f"(local prefill {fmt_ms(need)} > {fmt_ms(budget)} per step); {detail}",
                )
            bottleneck = self._decode_bound(opts)
            if bottleneck:
                return "pd", s, f"pd: decode side is the bottleneck ({bottleneck}); {detail}"
        if slo.ttft_ms is not None and self._prefill_bound(local, pd, req):
            return (
                "local",
                s,
                f"local: prefill side is the bottleneck "
                f"(P->D TTFT {fmt_ms(pd.ttft_ms)} > SLO {fmt_ms(slo.ttft_ms)}); {detail}",
            )
        local_breaks = slo_breaches(local, req)
        pd_breaks = slo_breaches(pd, req)
        if local_breaks and not pd_breaks:
            return "pd", s, f"pd: local breaks SLO ({'; '.join(local_breaks)}); {detail}"
        if pd_breaks and not local_breaks:
            return "local", s, f"local: pd breaks SLO ({'; '.join(pd_breaks)}); {detail}"
        suffix = "; both break the SLO" if local_breaks else ""
        if s > self._params["margin"]:
            return "local", s, f"local: {detail}{suffix}" if detail else ""
        return "pd", s, f"pd: {detail}{suffix}" if detail else ""

    @staticmethod
    def _pd_misses_ttft(local: Candidate, pd: Candidate, req: RequestView) -> bool:
        """P->D is predicted to break the TTFT target and local to meet it."""
        t = req.slo.ttft_ms
        return t is not None and pd.ttft_ms > t >= local.ttft_ms

    @classmethod
    def _hopeless_pd(cls, local: Candidate, pd: Candidate, req: RequestView) -> bool:
        """The model's own figures cannot rank the routes: P->D is prefill-bound and predicted far
        past the TTFT target, local far over the TPOT budget. Then the static rule the policy grid
        favours in such cells (``threshold:512``) decides: a short append goes local."""
        slo = req.slo
        return (
            slo.ttft_ms is not None
            and cls._prefill_bound(local, pd, req)
            and pd.ttft_ms > HOPELESS * slo.ttft_ms
            and local.prefill_tokens <= STATIC_LOCAL_TOKENS
        )

    @staticmethod
    def _prefill_bound(local: Candidate, pd: Candidate, req: RequestView) -> bool:
        """P->D breaks the TTFT target and local's TTFT is at most PREFILL_BOUND of P->D's."""
        slo = req.slo
        return slo.ttft_ms is not None and pd.ttft_ms > slo.ttft_ms and local.ttft_ms <= PREFILL_BOUND * pd.ttft_ms

    def _decode_saturated(self, opts: Options) -> tuple[float, float] | None:
        """(least loaded decode worker's TPOT with a joining stream, the limit) when even that worker
        runs at DECODE_SATURATED of the headroom'd TPOT target or more; None when one has room."""
        slo = opts.request.slo
        if opts.cluster is None or slo.tpot_ms is None:
            return None
        decodes = opts.cluster.by_role("decode")
        if not decodes:
            return None
        limit = DECODE_SATURATED * self._params["headroom"] * slo.tpot_ms
        least = min(joined_tpot_ms(opts.request, opts.session, w) for w in decodes)
        return (least, limit) if least >= limit else None

    def _decode_bound(self, opts: Options) -> str:
        """Why the decode side is the bottleneck while prefill has slack ('' when it is not).

        Saturated: every decode worker would run a joining stream at DECODE_SATURATED of the
        headroom'd TPOT target or more (local prefill there takes time the streams cannot spare).
        Slack: the P->D route meets the TTFT target with headroom (without a TTFT target: it is
        at most twice local's TTFT). Then P->D spends the idle prefill side instead."""
        req, pd, local = opts.request, opts.pd, opts.local
        slo = req.slo
        assert slo.tpot_ms is not None and pd is not None and local is not None
        if opts.cluster is None:
            return ""
        sat = self._decode_saturated(opts)
        if sat is None:
            return ""
        least, limit = sat
        slack = (
            pd.ttft_ms <= self._params["headroom"] * slo.ttft_ms
            if slo.ttft_ms is not None
            else pd.ttft_ms <= 2 * local.ttft_ms
        )
        if not slack:
            return ""
        return f"least loaded decode TPOT {fmt_ms(least)} >= {fmt_ms(limit)}, P->D TTFT {fmt_ms(pd.ttft_ms)}"
