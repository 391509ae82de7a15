"""Builders for the views a policy sees (hand-made clusters, sessions and requests)."""

from __future__ import annotations

from ppd_sdk.wire import SLO, Weights
from ppd_server.routing.types import ClusterView, CostCoefficients, RequestView, SessionView, WorkerView

# Round numbers so expected values are easy to check by hand.
COEFS = CostCoefficients(
    prefill_base_ms=5.0,
    prefill_per_token_ms=1.0,
    prefill_attn_ms_per_ktok2=0.2,
    decode_base_ms=20.0,
    decode_per_seq_ms=3.0,
    decode_per_kctx_ms=1.0,
)
KV_BYTES = 100_000


def prefill(url: str = "http://p0", **kw) -> WorkerView:
    kw.setdefault("kv_bytes_per_token", KV_BYTES)
    kw.setdefault("coefficients", COEFS)
    return WorkerView(url, "prefill", bootstrap_port=8998, **kw)


def decode(url: str = "http://d0", **kw) -> WorkerView:
    kw.setdefault("can_local_prefill", True)
    kw.setdefault("decode_radix_cache", True)
    kw.setdefault("kv_bytes_per_token", KV_BYTES)
    kw.setdefault("coefficients", COEFS)
    kw.setdefault("chunked_prefill_size", 256)
    return WorkerView(url, "decode", **kw)


def unified(url: str = "http://u0", **kw) -> WorkerView:
    kw.setdefault("kv_bytes_per_token", KV_BYTES)
    kw.setdefault("coefficients", COEFS)
    return WorkerView(url, "unified", **kw)


def loaded(running: int, context_per_stream: int = 1000, **kw) -> dict:
    """Decode-worker load fields for ``running`` streams."""
    return {"running_reqs": running, "running_context_tokens": running * context_per_stream, **kw}


def cluster(*workers: WorkerView, link_gbps: float = 10.0, backlog: int = 0) -> ClusterView:
    return ClusterView(tuple(workers), link_gbps=link_gbps, link_backlog_bytes=backlog)


def session(
    decode_url: str | None = "http://d0",
    prefill_url: str | None = "http://p0",
    cached_d: int = 1000,
    cached_p: int = 800,
    turns: int = 1,
    cid: str = "c1",
    forked_from: str | None = None,
) -> SessionView:
    return SessionView(cid, decode_url, prefill_url, cached_d, cached_p, turns, forked_from)


def request(
    turn: int = 2,
    prompt: int = 1100,
    out: int = 32,
    cid: str | None = "c1",
    w_ttft: float = 1.0,
    w_tpot: float = 1.0,
    slo_ttft_ms: float | None = None,
    slo_tpot_ms: float | None = None,
    **kw,
) -> RequestView:
    """A RequestView; the weight and SLO keywords become the wire's Weights and SLO."""
    return RequestView(
        cid, turn, prompt, out, Weights(ttft=w_ttft, tpot=w_tpot), SLO(ttft_ms=slo_ttft_ms, tpot_ms=slo_tpot_ms), **kw
    )
