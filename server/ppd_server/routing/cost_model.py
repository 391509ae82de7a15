"""The cost model: per-worker :class:`CostCoefficients`, started from a profile and refitted online
from observed timings, plus predicted-vs-observed error statistics.

Contract with the router app::

    cm = CostModel(profile)                        # profile: the JSON `ppd-server profile` saves, or None
    WorkerView(..., coefficients=cm.coefficients(url, role, served_model))   # every snapshot the policy sees
    cm.observe(Observation(...))                   # after each turn (timings the router measured)
    cm.error_summary()                             # for /metrics and the admin API

Online fit (one :class:`~ppd_server.routing.robust_fit.RobustFit` per worker and timing
component: a robust MAP fit over the recent samples, relative timing noise, the profile as a
Gaussian prior; see ``robust_fit.py`` for why not recursive least squares):

* how far the prior reaches is the profile's to say: ``"prior_rel_std": r`` (optional) marks a
  profile measured on this engine and hardware (``profiling.presets.DEFAULT_PROFILE`` for the
  embedded SmolLM2 cluster): each coefficient is trusted within ``r`` of its value, for workers
  serving the profile's ``"model"`` (or whose model is unknown). Without it, or for a worker
  serving another model, the profile is generic or foreign (defaults, a roofline, another
  machine's) and the prior is loose, 3x its values with CPU-to-GPU floors (``profile_prior.py``);
* prefill coefficients of the worker that ran the prefill - the P worker for ``pd``, the decode
  worker for ``local``, the unified worker for ``replica`` - from the observed TTFT minus the
  parts of the prediction that are not that prefill (queue wait, KV transfer, first decode
  step, chunk mixing: ``predicted_ttft_ms - predicted_compute_ms``, both as the decision priced
  them: a fit that has refitted since would misjudge how much of the TTFT was compute);
* a sample far outside the fit's own scatter (a cold first request, a burst queued behind
  requests the load poll had not seen) gets no weight, and is re-judged at every refit, so
  consistent later evidence wins back from an early outlier; TTFT samples predicted to be half
  or less compute (queue, transfer) are not fitted at all: their error is a queueing error
  (on a cold fit, fewer than 8 samples, whose TTFT came in under half the prediction, the
  compute's predicted share of the observed time is fitted instead: coefficients too pessimistic
  everywhere are as wrong about the queue, which they price too, and would otherwise never
  learn - locking local out);
* decode-step coefficients of the decode (or unified) worker from the observed TPOT, with the
  features the prediction uses (``latency.estimate_*``): (1, streams incl. this one, context /
  1000), the context being the other streams' (``decode_context_tokens``) plus this stream's
  prompt and half its answer; for ``local`` the predicted interference term is taken off first
  (it is spread over the worker's streams, not a step cost);
* cold start: a fit publishes nothing of its own until it has :data:`MIN_SAMPLES_TO_PUBLISH`
  samples (the prior stays, or the pooled estimate below), so the first, noisiest request does
  not steer the first decisions on its own;
* evidence is pooled across workers for prefill speed: a worker whose prefill fit has fewer than
  :data:`_DONOR_MIN_SAMPLES` samples of its own (a decode worker that rarely runs a local
  prefill) publishes the median of the
  prefill fits of the workers that have :data:`_DONOR_MIN_SAMPLES` or more, each rescaled by the
  profile's ratio between the two roles (1 when the profile has no ``by_role``: same model,
  usually the same hardware). Its next own sample restarts its fit from that pooled estimate
  (its few earlier samples refitted against it), so samples taken before a pool existed - judged
  against a wrong prior - cannot keep it from the pool's evidence.
  Without this, a decode worker's prefill coefficients move only when the policy goes local, and
  a prior that makes local look too slow (a CPU profile on GPUs) is never corrected: the policy
  never goes local, so the fit never learns - a cold-start lock-in.

The latency formulas themselves live in ``routing/latency.py``. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Any

from ppd_server.routing.latency import prefill_ms
from ppd_server.routing.linalg import median
from ppd_server.routing.observation import Observation, decode_features, from_end_to_end, prefill_features
from ppd_server.routing.profile_prior import decode_fit, prefill_fit, same_model
from ppd_server.routing.types import (
    COEFFICIENT_NAMES,
    CostCoefficients,
    Role,
)

_ERROR_WINDOW = 1000
_MIN_COMPUTE_SHARE = 0.5  # prefill fits learn from TTFTs predicted to be mostly compute
_PESSIMISTIC = 0.5  # a cold fit whose TTFT came in under this share of the prediction learns from queued samples too
_RESCUE_SAMPLES = 8  # ... while the fit has fewer samples than this (a warm fit: a queueing error, not fitted)
MIN_SAMPLES_TO_PUBLISH = 3  # a fit's own estimate is used from this many samples on; the prior before
_DONOR_MIN_SAMPLES = 8  # a prefill fit is evidence for workers without one once it has this many samples
# the pool is a prior: republished on a new donor and every this many donor refits (not every
# one: that would cost O(workers) per observation, ~0.1 ms at 32P32D)
_POOL_REFRESH_EVERY = 8
_REBASE_GAIN = 0.5  # the pool replaces a worker's own prefill fit when it halves the fit's error on its own samples


class _WorkerFit:
    def __init__(self, start: CostCoefficients, prior_rel_std: float | None, model: str | None = None) -> None:
        self.start = start  # the profile's coefficients for its role (the pool rescales by them)
        self.prior_rel_std = prior_rel_std
        self.model = model  # the model the worker serves, when the router knows it
        p0 = (start.prefill_base_ms, start.prefill_per_token_ms, start.prefill_attn_ms_per_ktok2)
        d0 = (start.decode_base_ms, start.decode_per_seq_ms, start.decode_per_kctx_ms)
        self.prefill = prefill_fit(p0, prior_rel_std)
        self.decode = decode_fit(d0, prior_rel_std)
        self.coefficients = start
        # prefill coefficients taken from other workers' fits (no own prefill sample yet)
        self.prefill_pooled = False

    def refresh(self, component: str) -> None:
        """Republish the coefficients of ``component`` ("prefill" or "decode") after a refit.

        Cold start: until the fit has :data:`MIN_SAMPLES_TO_PUBLISH` samples the published values
        stay what they were (the profile's prior, or the estimate pooled from other workers): one
        noisy first request - a cold cache, a warm-up - must not steer the first decisions alone."""
        fit = self.prefill if component == "prefill" else self.decode
        if fit.samples < MIN_SAMPLES_TO_PUBLISH:
            return
        names = COEFFICIENT_NAMES[:3] if component == "prefill" else COEFFICIENT_NAMES[3:]
        self.coefficients = replace(self.coefficients, **dict(zip(names, fit.theta)))
        if component == "prefill":
            self.prefill_pooled = False

    def publish_pooled_prefill(self, values: tuple[float, float, float]) -> None:
        """Publish prefill coefficients pooled from other workers (only while there is no own sample)."""
        self.coefficients = replace(self.coefficients, **dict(zip(COEFFICIENT_NAMES[:3], values)))
        self.prefill_pooled = True

    def publish_prior_prefill(self) -> None:
        """Back to the fit's own prior for prefill (the pool it took values from is gone)."""
        self.coefficients = replace(self.coefficients, **dict(zip(COEFFICIENT_NAMES[:3], self.prefill.theta0)))
        self.prefill_pooled = False

    def restart_prefill_from_published(self) -> None:
        """Before an own sample of a pooled worker: the pooled estimate becomes its prior, and the
        few own samples it already had are refitted against it (they were judged against a prior
        the pool has since shown wrong)."""
        c = self.coefficients
        self.prefill = self.prefill.rebased(
            prefill_fit((c.prefill_base_ms, c.prefill_per_token_ms, c.prefill_attn_ms_per_ktok2), self.prior_rel_std)
        )


def _pooled_prefill(start: CostCoefficients, donors: list[_WorkerFit]) -> tuple[float, float, float]:
    """The donors' median published prefill coefficients, each rescaled to a worker that starts
    from ``start`` (the profile's ratio between the two roles; 1 when they start alike). The
    median, not the mean: one donor still far from its truth (few samples, a tight wrong prior)
    must not drag the pool."""
    out = []
    for name in COEFFICIENT_NAMES[:3]:
        mine = getattr(start, name)
        out.append(
            median(
                [
                    getattr(d.coefficients, name) * (mine / theirs if (theirs := getattr(d.start, name)) > 0 else 1.0)
                    for d in donors
                ]
            )
        )
    return out[0], out[1], out[2]


def _abs_pct(pred: float, obs: float) -> float:
    return abs(pred - obs) / max(obs, 1e-9) * 100.0


class CostModel:
    """Per-worker coefficients (profile prior + online fit) and prediction-error statistics."""

    def __init__(self, profile: dict[str, Any] | None = None, error_window: int = _ERROR_WINDOW) -> None:
        if error_window < 1:
            raise ValueError(f"error_window must be >= 1, got {error_window}")
        self._error_window = error_window
        self.model_name: str | None = None
        self._default = CostCoefficients()
        self._by_role: dict[str, CostCoefficients] = {}
        self.prior_rel_std: float | None = None  # None: a loose prior (the profile is not trusted)
        if profile is not None:
            self._load_profile(profile)
        self._fits: dict[str, _WorkerFit] = {}
        self._donor_refits = 0
        self._errors: dict[str, deque[tuple[float | None, float, float | None, float | None]]] = {}

    def _load_profile(self, profile: dict[str, Any]) -> None:
        if not isinstance(profile, dict) or not isinstance(profile.get("coefficients"), dict):
            raise ValueError("a cost profile must be a JSON object with a 'coefficients' object")
        self.model_name = profile.get("model")
        rel = profile.get("prior_rel_std")
        if rel is not None:
            if isinstance(rel, bool) or not isinstance(rel, (int, float)) or not 0.0 < rel <= 10.0:
                raise ValueError(f"profile 'prior_rel_std' must be a number in (0, 10], got {rel!r}")
            self.prior_rel_std = float(rel)
        self._default = CostCoefficients.from_dict(profile["coefficients"])
        by_role = profile.get("by_role") or {}
        if not isinstance(by_role, dict):
            raise ValueError("profile 'by_role' must map a role to a coefficients object")
        for role, coefs in by_role.items():
            if role not in ("prefill", "decode", "unified"):
                raise ValueError(f"profile 'by_role' has unknown role {role!r}")
            self._by_role[role] = CostCoefficients.from_dict({**self._default.to_dict(), **coefs})

    def start_coefficients(self, role: Role) -> CostCoefficients:
        """The profile's coefficients for a role (before any online fit)."""
        return self._by_role.get(role, self._default)

    def coefficients(self, url: str, role: Role, model: str | None = None) -> CostCoefficients:
        """The current fitted coefficients of worker ``url`` (cheap: cached between observations).

        ``model``: the model the worker serves, when known (``/server_info``). A trusted profile
        is trusted only for its own model: for a worker serving another one its prior is loose
        (``profile_prior``). A worker that turns out to serve another model than its fit was
        made for (first known now, or changed by a restart) starts a fresh fit."""
        fit = self._fits.get(url)
        if fit is None or (model is not None and model != fit.model):
            fit = self._new_fit(url, role, model, fit)
        return fit.coefficients

    def trusts_profile_for(self, model: str | None) -> bool:
        """Whether a worker serving ``model`` gets the profile's trusted prior (``prior_rel_std``)."""
        return self.prior_rel_std is not None and same_model(self.model_name, model)

    def _new_fit(self, url: str, role: Role, model: str | None, old: _WorkerFit | None) -> _WorkerFit:
        trusted = self.trusts_profile_for(model)
        if old is not None and same_model(old.model, model) and (old.prior_rel_std is not None) == trusted:
            old.model = model  # the model is now known and changes nothing: keep the samples
            return old
        fit = self._fits[url] = _WorkerFit(
            self.start_coefficients(role), self.prior_rel_std if trusted else None, model
        )
        if old is not None and old.prefill.samples >= _DONOR_MIN_SAMPLES:
            self._republish_pooled_prefill()  # its evidence left the pool
        else:
            self._pool_prefill_into(fit)
        return fit

    def forget(self, url: str) -> None:
        """Drop a worker's fit (it was removed from the cluster)."""
        gone = self._fits.pop(url, None)
        if gone is not None and gone.prefill.samples >= _DONOR_MIN_SAMPLES:
            self._republish_pooled_prefill()

    # -- pooled prefill evidence -------------------------------------------------------------------

    def _pool_prefill_into(
        self,
        fit: _WorkerFit,
        donors: list[_WorkerFit] | None = None,
        pooled_by_start: dict[CostCoefficients, tuple[float, float, float]] | None = None,
    ) -> None:
        """Give a worker without own prefill samples the donors' mean prefill coefficients, each
        scaled by the profile's ratio between the recipient's role and the donor's (per
        coefficient). No donor yet: it keeps its own prior. ``donors`` and ``pooled_by_start``
        let a republish over all workers compute the pool once per distinct start."""
        if fit.prefill.samples >= _DONOR_MIN_SAMPLES:
            return
        if donors is None:
            donors = self._prefill_donors()
        if not donors:
            if fit.prefill_pooled:  # the donors left: back to its own prior
                fit.publish_prior_prefill()
            return
        cache = pooled_by_start if pooled_by_start is not None else {}
        values = cache.get(fit.start)
        if values is None:
            values = cache[fit.start] = _pooled_prefill(fit.start, donors)
        fit.publish_pooled_prefill(values)

    def _prefill_donors(self) -> list[_WorkerFit]:
        return [d for d in self._fits.values() if d.prefill.samples >= _DONOR_MIN_SAMPLES]

    def _republish_pooled_prefill(self) -> None:
        donors = self._prefill_donors()
        cache: dict[CostCoefficients, tuple[float, float, float]] = {}
        for fit in self._fits.values():
            if fit.prefill.samples < _DONOR_MIN_SAMPLES:
                self._pool_prefill_into(fit, donors, cache)
            elif len(donors) > 1:
                self._rebase_if_pool_explains_better(fit, [d for d in donors if d is not fit])

    def _rebase_if_pool_explains_better(self, fit: _WorkerFit, others: list[_WorkerFit]) -> None:
        """A fitted worker whose own estimate explains its own recent samples worse than the other
        workers' pool does (a trusted prior from other hardware moves slowly, and a decode worker
        gets few local samples) restarts from the pool, its window refitted against it."""
        pooled = _pooled_prefill(fit.start, others)
        if fit.prefill.window_error(pooled) < _REBASE_GAIN * fit.prefill.window_error(fit.prefill.theta):
            fit.publish_pooled_prefill(pooled)
            fit.restart_prefill_from_published()
            fit.refresh("prefill")

    # -- online fit ------------------------------------------------------------------------------

    def observe(self, obs: Observation) -> None:
        """Refit from one completed turn and record its prediction error. Bad values are ignored
        (a timing the router could not measure must not poison the fit)."""
        if obs.ttft_ms is None:
            derived = from_end_to_end(obs)
            if derived is None:
                return
            obs = derived
        if obs.new_tokens < 0 or obs.cached_tokens < 0 or (obs.ttft_ms is not None and not obs.ttft_ms >= 0):
            return
        self._record_error(obs)
        prefill_url = obs.prefill_url if obs.route == "pd" else obs.decode_url
        prefill_role: Role = "prefill" if obs.route == "pd" else ("decode" if obs.route == "local" else "unified")
        new, cached = obs.new_tokens, obs.cached_tokens
        if obs.route == "pd" and obs.prefill_cached_tokens is not None:
            prompt = obs.new_tokens + obs.cached_tokens
            cached = max(0, min(obs.prefill_cached_tokens, prompt))
            new = prompt - cached
        if prefill_url is not None and new > 0 and obs.ttft_ms is not None:
            fit = self._fit(prefill_url, prefill_role)
            x = prefill_features(new, cached)
            # the decision's own split of its TTFT: coefficients refitted since (a cold fit publishing
            # its first estimate) would price the compute against a queue priced with the old ones
            # (issue 7: 1P3D big_paste seed 3 took 5 samples at ~3% of a 525 ms TTFT predicted with
            # the prior, fitted prefill at 0 per token and never sampled again: P->D TTFT 22 vs 40 ms)
            predicted_compute = obs.predicted_compute_ms
            if predicted_compute is None or not predicted_compute >= 0:
                predicted_compute = prefill_ms(fit.coefficients, new, cached)
            overhead = 0.0
            if obs.predicted_ttft_ms is not None:
                overhead = max(0.0, obs.predicted_ttft_ms - predicted_compute)
            target = obs.ttft_ms - overhead
            # a TTFT predicted to be mostly queueing/transfer says little about compute, and its
            # error is mostly a queueing error (a burst the load poll had not seen): skip it ...
            compute_share = predicted_compute / max(predicted_compute + overhead, 1e-9)
            rescue = (
                fit.prefill.samples < _RESCUE_SAMPLES
                and obs.predicted_ttft_ms is not None
                and obs.ttft_ms < _PESSIMISTIC * obs.predicted_ttft_ms
            )
            if rescue:
                # ... except on a cold fit whose prediction was far too pessimistic: the queue and the
                # decode iteration in flight were priced with the same kind of coefficients (a CPU profile
                # on GPUs is as wrong about them as about the prefill; their predicted share can
                # even exceed the whole observed TTFT), so take the compute's predicted share of
                # the observed time. Without this a prefill worker queued from the start never
                # gets a sample, nor do the decode workers pooling from it, and local prefill
                # looks hopeless for good (a lock-in). A prior that is too optimistic needs no
                # rescue: the policy then goes local and learns.
                target = obs.ttft_ms * compute_share
            if target > 0 and (compute_share > _MIN_COMPUTE_SHARE or rescue):
                if fit.prefill_pooled:  # an own sample of a pooled worker: start from what it was predicted with
                    fit.restart_prefill_from_published()
                fit.prefill.update(x, target)
                fit.refresh("prefill")
                if fit.prefill.samples >= _DONOR_MIN_SAMPLES:  # evidence for the workers without any
                    self._donor_refits += 1
                    if fit.prefill.samples == _DONOR_MIN_SAMPLES or self._donor_refits % _POOL_REFRESH_EVERY == 0:
                        self._republish_pooled_prefill()
        if obs.decode_url is not None and obs.tpot_ms is not None and obs.tpot_ms > 0:
            role: Role = "unified" if obs.route == "replica" else "decode"
            fit = self._fit(obs.decode_url, role)
            x_dec = decode_features(obs)
            # the local route's predicted TPOT is the decode step plus the interference its
            # append-prefill spreads over the worker's streams; in steady state each stream absorbs
            # about that much from the other streams' local prefills, so fit the step alone
            interference = 0.0
            if obs.route == "local" and obs.predicted_tpot_ms is not None:
                interference = max(0.0, obs.predicted_tpot_ms - fit.decode.predict(x_dec))
            target = obs.tpot_ms - interference
            if target > 0:
                fit.decode.update(x_dec, target)
                fit.refresh("decode")

    def _fit(self, url: str, role: Role) -> _WorkerFit:
        self.coefficients(url, role)
        return self._fits[url]

    def _record_error(self, obs: Observation) -> None:
        if obs.predicted_ttft_ms is None and obs.predicted_tpot_ms is None:
            return
        window = self._errors.setdefault(obs.route, deque(maxlen=self._error_window))
        window.append(
            (obs.ttft_ms, obs.predicted_ttft_ms or 0.0, obs.tpot_ms, obs.predicted_tpot_ms)
        )  # ttft None: unknown

    def error_summary(self) -> dict[str, dict[str, float]]:
        """Per route over the last ``error_window`` observations: count, mean absolute % error of TTFT and TPOT,
        and the mean observed/predicted ratio (>1: the model is optimistic)."""
        out: dict[str, dict[str, float]] = {}
        for route, window in sorted(self._errors.items()):
            ttft = [(o, p) for o, p, _, _ in window if o is not None and p > 0 and o > 0]
            tpot = [(o, p) for _, _, o, p in window if o is not None and p is not None and p > 0 and o > 0]
            row: dict[str, float] = {"count": float(len(window))}
            if ttft:
                row["ttft_abs_pct_err"] = sum(_abs_pct(p, o) for o, p in ttft) / len(ttft)
                row["ttft_obs_over_pred"] = sum(o / p for o, p in ttft) / len(ttft)
            if tpot:
                row["tpot_abs_pct_err"] = sum(_abs_pct(p, o) for o, p in tpot) / len(tpot)
                row["tpot_obs_over_pred"] = sum(o / p for o, p in tpot) / len(tpot)
            out[route] = row
        return out

    def snapshot(self) -> dict[str, Any]:
        """Fitted coefficients per worker, for the admin API (same shape as a profile's)."""
        return {
            "model": self.model_name,
            "coefficients": self._default.to_dict(),
            "workers": {
                url: {
                    "coefficients": fit.coefficients.to_dict(),
                    "prefill_samples": fit.prefill.samples,
                    "decode_samples": fit.decode.samples,
                    "prefill_pooled": fit.prefill_pooled,
                }
                for url, fit in sorted(self._fits.items())
            },
        }
