"""``local``: every turn 2+ runs its append-prefill on the decode worker holding the session.

Turn 1 goes P->D. A decode worker that cannot prefill locally still gets P->D. No parameters.
"""

from __future__ import annotations

from ppd_server.routing.policies.base import Options, Policy
from ppd_server.routing.types import RouteName


class LocalPolicy(Policy):
    name = "local"

    def choose(self, opts: Options) -> tuple[RouteName, float | None, str]:
        return "local", None, f"local: policy local ({opts.uncached_tokens} uncached tokens)"
