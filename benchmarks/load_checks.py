"""The checks of ``router_load.py``: what the load generator records per request id (:class:`Tally`),
exactly-once at the client and at the fake workers, and the verdict over the whole run's figures."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

#: x-request-id prefix of the turns that wait for the router to serve (not part of the run)
PROBE = "readiness-probe-"


@dataclass
class Tally:
    sent: list[str] = field(default_factory=list)
    answered: collections.Counter = field(default_factory=collections.Counter)  # id -> good answers
    routes: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # "id: why" (the first 20 kept)
    failed: int = 0
    tokens: int = 0

    def fail(self, rid: str, why: str) -> None:
        self.failed += 1
        if len(self.failures) < 20:
            self.failures.append(f"{rid}: {why}")


def exactly_once(tally: Tally, decode_ids: dict[str, int] | None, prefill_ids: dict[str, int] | None) -> dict:
    """Per request id, at the client and (fake workers: ``*_ids`` not None) at each worker."""
    sent = collections.Counter(tally.sent)
    if decode_ids is None or prefill_ids is None:  # real workers do not count ids for us
        lost = [r for r in sent if tally.answered[r] == 0]
        return {
            "requests_sent": len(tally.sent),
            "answered_exactly_once_client": sum(1 for r in sent if tally.answered[r] == 1),
            "lost": len(lost),
            "duplicated_client": sum(1 for n in tally.answered.values() if n > 1)
            + sum(1 for n in sent.values() if n > 1),
            "decode_not_exactly_once": None,
            "prefill_not_as_routed": None,
            "unknown_ids_at_workers": None,
            "routes": dict(collections.Counter(tally.routes.values())),
            "examples": lost[:5],
        }
    lost = [r for r in sent if tally.answered[r] == 0]
    dup_sent = [r for r, n in sent.items() if n > 1]
    dup_client = [r for r, n in tally.answered.items() if n > 1]
    decode_wrong = [r for r in sent if decode_ids.get(r, 0) != 1 and tally.answered[r]]
    prefill_wrong = [
        r for r in sent if tally.answered[r] and prefill_ids.get(r, 0) != (1 if tally.routes.get(r) == "pd" else 0)
    ]
    unknown = [r for r in list(decode_ids) + list(prefill_ids) if r not in sent and not r.startswith(PROBE)]
    return {
        "requests_sent": len(tally.sent),
        "answered_exactly_once_client": sum(1 for r in sent if tally.answered[r] == 1),
        "lost": len(lost),
        "duplicated_client": len(dup_client) + len(dup_sent),
        "decode_not_exactly_once": len(decode_wrong),
        "prefill_not_as_routed": len(prefill_wrong),
        "unknown_ids_at_workers": len(unknown),
        "routes": dict(collections.Counter(tally.routes.values())),
        "examples": (lost + decode_wrong + prefill_wrong + unknown)[:5],
    }


def verdict(r: dict) -> list[str]:
    """The checks that failed (empty: all passed)."""
    eo, bad = r["exactly_once"], []
    for key in (
        "lost",
        "duplicated_client",
        "decode_not_exactly_once",
        "prefill_not_as_routed",
        "unknown_ids_at_workers",
    ):
        if eo[key]:  # (None: not counted, real workers)
            bad.append(f"{key} = {eo[key]}")
    if eo["router_counted"] != eo["requests_sent"]:
        bad.append(f"the router counted {eo['router_counted']} requests, the client sent {eo['requests_sent']}")
    if r["failures"]:
        bad.append(f"{r['failures']} failed requests")
    if r["session_table"]["max_seen"] > r["session_table"]["bound"]:
        bad.append(f"session table reached {r['session_table']['max_seen']} > {r['session_table']['bound']}")
    if r["rss_kib"]["growth_after_warmup_pct"] >= 10.0:
        bad.append(f"router RSS grew {r['rss_kib']['growth_after_warmup_pct']}% over phase B after its warm-up")
    return bad
