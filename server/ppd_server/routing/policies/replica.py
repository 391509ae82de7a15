"""``replica``: serve from unified (non-disaggregated) workers.

Picks the unified worker with the best predicted TTFT/TPOT under the request's weights; the
session's worker wins ties (its prefix cache is warm), then a hash of (conversation id, turn).
Without unified workers it behaves like ``pd``. No parameters.
"""

from __future__ import annotations

from ppd_server.routing.policies.base import Options, Policy, build_options
from ppd_server.routing.types import ClusterView, Decision, RequestView, RouteName, SessionView


class ReplicaPolicy(Policy):
    name = "replica"

    def decide(self, request: RequestView, cluster: ClusterView, session: SessionView | None) -> Decision:
        opts = build_options(request, cluster, session)
        if opts.replica is not None:
            return self.fallback(Options(request, session, opts.continuation, None, None, None, opts.replica, opts.why_not_local))
        return super().decide(request, cluster, session)

    def choose(self, opts: Options) -> tuple[RouteName, float | None, str]:
        return "pd", None, "pd: policy replica, no unified worker"
