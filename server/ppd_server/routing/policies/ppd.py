"""``ppd`` (the default): the PPD cost rule with live load, per-request weights and SLO limits.

For a turn 2+ request whose decode worker can prefill locally, both routes are predicted by the
latency model (see ``routing/latency.py``) and scored as in the PPD paper:

    S = w_ttft * (TTFT_pd - TTFT_local) / TTFT_pd  -  w_tpot * (TPOT_local - TPOT_pd) / TPOT_pd

D-local iff ``S > margin`` (margin 0 by default). The weights are the request's (``ppd.weights``
or a preset) multiplied by this policy's ``w_ttft`` / ``w_tpot`` (operator-wide scaling, 1.0):
:meth:`PPDPolicy.score_weights`, recorded on the Decision and the router's span.
Absolute SLO targets are hard limits: a route predicted to break a target the other route meets
loses whatever S says. The reason names S and the predictions, e.g.
``local: S=+0.41 (ttft 38ms vs 212ms, tpot +6%)``.

Needs: live load on the decode and prefill workers, their cost coefficients, the session's
cached-token counts. Parameters: ``w_ttft`` (float >= 0), ``w_tpot`` (float >= 0), ``margin``
(float, -1..1).
"""

from __future__ import annotations

from typing import Any

from ppd_sdk.wire import Weights
from ppd_server.routing.policies.base import Options, Policy, fmt_ms
from ppd_server.routing.types import Candidate, RequestView, RouteName


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


class PPDPolicy(Policy):
    name = "ppd"
    defaults = {"w_ttft": 1.0, "w_tpot": 1.0, "margin": 0.0}

    def validate_params(self, params: dict[str, Any]) -> None:
        for key in ("w_ttft", "w_tpot"):
            if not 0.0 <= params[key] <= 1000.0:
                raise ValueError(f"policy 'ppd' parameter {key} must be in [0, 1000], got {params[key]!r}")
        if not -1.0 <= params["margin"] <= 1.0:
            raise ValueError(f"policy 'ppd' parameter margin must be in [-1, 1], got {params['margin']!r}")

    def score_weights(self, request: RequestView) -> Weights:
        """The request's weights scaled by this policy's operator-wide ``w_ttft`` / ``w_tpot``."""
        scale_ttft, scale_tpot = self._params["w_ttft"], self._params["w_tpot"]
        if scale_ttft == 1.0 and scale_tpot == 1.0:
            return request.weights
        w = request.weights
        return Weights.model_construct(ttft=scale_ttft * w.ttft, tpot=scale_tpot * w.tpot)

    def choose(self, opts: Options) -> tuple[RouteName, float | None, str]:
        assert opts.local is not None and opts.pd is not None
        req = opts.request
        w = self.score_weights(req)
        s = ppd_score(opts.local, opts.pd, w.ttft, w.tpot)
        detail = f"S={s:+.2f} ({self.describe(opts.local, opts.pd)})"
        local_breaks = slo_breaches(opts.local, req)
        pd_breaks = slo_breaches(opts.pd, req)
        if local_breaks and not pd_breaks:
            return "pd", s, f"pd: local breaks SLO ({'; '.join(local_breaks)}); {detail}"
        if pd_breaks and not local_breaks:
            return "local", s, f"local: pd breaks SLO ({'; '.join(pd_breaks)}); {detail}"
        suffix = "; both break the SLO" if local_breaks else ""
        if s > self._params["margin"]:
            return "local", s, f"local: {detail}{suffix}"
        return "pd", s, f"pd: {detail}{suffix}"
