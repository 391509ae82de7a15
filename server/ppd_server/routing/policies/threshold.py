"""``threshold:N``: D-local iff the tokens the decode worker does not cache are <= N.

What NVIDIA Dynamo (``max_local_prefill_length``) and llm-d (``prefix-based-pd-decider``,
``nonCachedTokens``) ship: a static token cut-off with no load or SLO awareness. Parameter
``tokens`` >= 0.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ppd_server.routing.policies.base import Options, Policy
from ppd_server.routing.types import RouteName


class ThresholdPolicy(Policy):
    name = "threshold"
    defaults: ClassVar[dict[str, Any]] = {"tokens": 256}
    spec_metavar = "N"
    spec_param = "tokens"

    def validate_params(self, params: dict[str, Any]) -> None:
        if params["tokens"] < 0:
            raise ValueError(f"policy 'threshold' needs a token count >= 0, got {params['tokens']!r}")

    @property
    def spec(self) -> str:
        return f"threshold:{self._params['tokens']}"

    def choose(self, opts: Options) -> tuple[RouteName, float | None, str]:
        n, limit = opts.uncached_tokens, self._params["tokens"]
        if n <= limit:
            return "local", None, f"local: {n} uncached tokens <= {limit}"
        return "pd", None, f"pd: {n} uncached tokens > {limit}"
