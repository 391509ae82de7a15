"""``pd``: classic disaggregation - every request goes prefill worker -> decode worker.

Continuations still prefer the decode worker that holds the session's KV (with a radix cache it
receives only the new suffix). Needs: the P and D pools. No parameters.
"""

from __future__ import annotations

from ppd_server.routing.policies.base import Options, Policy
from ppd_server.routing.types import RouteName


class PDPolicy(Policy):
    name = "pd"

    def choose(self, opts: Options) -> tuple[RouteName, float | None, str]:
        return "pd", None, "pd: policy pd (always prefill -> decode)"
