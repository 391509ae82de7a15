"""Turn a worker's load report into numbers the policy uses.

Sources, in order: SGLang's ``GET /v1/loads`` (PR #16976 shape: ``{"loads": [rank, ...]}`` with
the core fields flat in each rank or under ``"core"``), else Prometheus ``GET /metrics`` with the
``sglang:`` (or ``sglang_``) prefix. Both are summed over data-parallel ranks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LoadReport:
    running_reqs: int = 0
    waiting_reqs: int = 0
    waiting_tokens: int = 0
    used_tokens: int = 0
    running_context_tokens: int = 0
    max_total_tokens: int = 0


def _num(d: Mapping[str, Any], *names: str) -> float:
    for n in names:
        v = d.get(n)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return 0.0


def parse_v1_loads(payload: Any) -> LoadReport:
    """Parse ``/v1/loads`` JSON; raises ValueError when it is not that shape."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("loads"), list):
        raise ValueError("not a /v1/loads payload")
    tot = dict.fromkeys(("run", "wait", "wtok", "used", "ctx", "max"), 0.0)
    for rank in payload["loads"]:
        if not isinstance(rank, Mapping):
            continue
        flat: dict[str, Any] = dict(rank)
        for section in ("core", "disaggregation", "queues", "memory"):
            sub = rank.get(section)
            if isinstance(sub, Mapping):
                flat.update({k: v for k, v in sub.items() if k not in flat or not isinstance(flat[k], (int, float))})
        tot["run"] += _num(flat, "num_running_reqs")
        tot["wait"] += _num(flat, "num_waiting_reqs") + _num(
            flat, "prefill_bootstrap_queue_reqs", "decode_prealloc_queue_reqs"
        )
        tot["wtok"] += _num(flat, "num_waiting_uncached_tokens", "num_waiting_tokens")
        tot["used"] += _num(flat, "num_used_tokens")
        tot["ctx"] += _num(flat, "running_context_tokens", "num_running_context_tokens", "sum_running_context_tokens")
        tot["max"] += _num(flat, "max_total_num_tokens", "token_capacity")
    return LoadReport(
        int(tot["run"]), int(tot["wait"]), int(tot["wtok"]), int(tot["used"]), int(tot["ctx"]), int(tot["max"])
    )


def parse_prometheus(text: str) -> LoadReport:
    """Parse SGLang's ``/metrics`` text (gauges summed over label sets)."""
    from prometheus_client.parser import text_string_to_metric_families

    vals: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        name = (
            fam.name.replace("sglang:", "").replace("sglang_", "", 1)
            if fam.name.startswith(("sglang:", "sglang_"))
            else None
        )
        if name is None:
            continue
        for s in fam.samples:
            if s.name.endswith(("_bucket", "_count", "_sum", "_created")):
                continue
            vals[name] = vals.get(name, 0.0) + s.value
    if not vals:
        raise ValueError("no sglang metrics found")
    return LoadReport(
        running_reqs=int(vals.get("num_running_reqs", 0)),
        waiting_reqs=int(vals.get("num_queue_reqs", 0)),
        used_tokens=int(vals.get("num_used_tokens", vals.get("kv_used_tokens", 0))),
        max_total_tokens=int(vals.get("max_total_num_tokens", 0)),
    )
