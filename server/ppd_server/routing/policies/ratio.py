"""``ratio:X``: a fixed share X of turn 2+ requests runs D-local, the rest P->D.

The share is decided by a hash of (conversation id, turn), so it is deterministic and the same
in the router and the simulator. Useful as a baseline and for A/B splits. Parameter ``ratio``
in [0, 1].
"""

from __future__ import annotations

from typing import Any, ClassVar

from ppd_server.routing.placement import stable_fraction
from ppd_server.routing.policies.base import Options, Policy
from ppd_server.routing.types import RouteName


class RatioPolicy(Policy):
    name = "ratio"
    defaults: ClassVar[dict[str, Any]] = {"ratio": 0.5}
    spec_metavar = "X"
    spec_param = "ratio"

    def validate_params(self, params: dict[str, Any]) -> None:
        if not 0.0 <= params["ratio"] <= 1.0:
            raise ValueError(f"policy 'ratio' needs a share in [0, 1], got {params['ratio']!r}")

    @property
    def spec(self) -> str:
        return f"ratio:{self._params['ratio']:g}"

    def choose(self, opts: Options) -> tuple[RouteName, float | None, str]:
        x = stable_fraction(opts.request.conversation_id, opts.request.turn, "ratio")
        share = self._params["ratio"]
        if x < share:
            return "local", None, f"local: hash share {x:.2f} < ratio {share:g}"
        return "pd", None, f"pd: hash share {x:.2f} >= ratio {share:g}"
