"""``replica``: serve from unified (non-disaggregated) workers.

Picks the unified worker with the best predicted TTFT/TPOT under the request's weights; the
session's worker wins ties (its prefix cache is warm), then a hash of (conversation id, turn).
Without unified workers it behaves like ``pd``. No parameters.
"""

from __future__ import annotations

from dataclasses import replace

from ppd_server.routing.policies.base import Options, Policy
from ppd_server.routing.types import Decision, RouteName


class ReplicaPolicy(Policy):
    name = "replica"

    def preempt(self, opts: Options) -> Decision | None:
        if opts.replica is None:
            return None  # no unified worker: the shared flow, where choose() says pd
        return self.fallback(replace(opts, holder=None, pd=None, local=None, cold_local=None))

    def choose(self, opts: Options) -> tuple[RouteName, float | None, str]:
        return "pd", None, "pd: policy replica, no unified worker"
