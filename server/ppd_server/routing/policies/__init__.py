"""Routing policies: one per file, all behind :class:`Policy`, built by :func:`make_policy`.

Specs (the CLI, config and admin API take these strings; names come from :data:`POLICY_NAMES`):

* ``ppd`` (default) - the PPD cost rule: S score, live load, SLO hard limits;
* ``pd`` - always prefill -> decode;
* ``local`` - turn 2+ always D-local;
* ``replica`` - unified workers;
* ``ratio:X`` - a deterministic share X of turn 2+ D-local;
* ``threshold:N`` - D-local iff uncached tokens <= N (Dynamo / llm-d style).

``make_policy(spec, **params)`` validates everything and raises ``ValueError`` naming the bad
value; to change weights at run time build a new policy and swap it in (policies are immutable):
``make_policy(old.spec, **{**old.params, "w_tpot": 2.0})``.
"""

from __future__ import annotations

from typing import Any

from ppd_server.routing.policies.base import Options, Policy, build_options
from ppd_server.routing.policies.local import LocalPolicy
from ppd_server.routing.policies.pd import PDPolicy
from ppd_server.routing.policies.ppd import PPDPolicy, ppd_score
from ppd_server.routing.policies.ratio import RatioPolicy
from ppd_server.routing.policies.replica import ReplicaPolicy
from ppd_server.routing.policies.threshold import ThresholdPolicy

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (PPDPolicy, PDPolicy, LocalPolicy, ReplicaPolicy, RatioPolicy, ThresholdPolicy)
}
POLICY_NAMES: tuple[str, ...] = tuple(POLICIES)
#: What a user may type: names, with the argument form for the parameterised ones (from the classes).
POLICY_SPECS: tuple[str, ...] = tuple(cls.usage() for cls in POLICIES.values())


def make_policy(spec: str, **params: Any) -> Policy:
    """Build a policy from ``name`` or ``name:arg`` plus keyword parameters.

    ``make_policy("ratio:0.3")`` == ``make_policy("ratio", ratio=0.3)``; a keyword parameter
    overrides the spec's argument (so ``make_policy(p.spec, **p.params)`` rebuilds ``p``). A bad name, argument or
    parameter raises ValueError naming it and listing the choices.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"policy spec must be a non-empty string, got {spec!r}; choose one of {', '.join(POLICY_SPECS)}"
        )
    name, sep, arg = spec.strip().partition(":")
    cls = POLICIES.get(name)
    if cls is None:
        raise ValueError(f"unknown policy {spec!r}; choose one of {', '.join(POLICY_SPECS)}")
    if sep:
        key = cls.spec_param
        if key is None:
            raise ValueError(
                f"policy {name!r} takes no argument, got {spec!r}; choose one of {', '.join(POLICY_SPECS)}"
            )
        try:
            arg_value = float(arg) if isinstance(cls.defaults[key], float) else int(arg)
        except ValueError:
            raise ValueError(
                f"policy {spec!r}: {arg!r} is not a valid {key}; e.g. {name}:{cls.defaults[key]}"
            ) from None
        params = {key: arg_value, **params}  # an explicit keyword parameter wins over the spec's
    return cls(**params)


__all__ = [
    "POLICIES",
    "POLICY_NAMES",
    "POLICY_SPECS",
    "LocalPolicy",
    "Options",
    "PDPolicy",
    "PPDPolicy",
    "Policy",
    "RatioPolicy",
    "ReplicaPolicy",
    "ThresholdPolicy",
    "build_options",
    "make_policy",
    "ppd_score",
]
