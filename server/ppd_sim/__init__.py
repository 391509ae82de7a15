"""``ppd-sim``: a discrete-event simulator of a P/D fleet that routes with the router's own policy
objects (``make_policy(spec).decide(request, cluster, session)``), at GPU scale.

Layout: ``workload`` (conversations), ``worker`` (continuous batching + chunked prefill over a
``kv`` pool), ``link`` (P->D KV transfers), ``cluster`` (fleet shape and the ClusterView),
``engine`` (the run), ``report`` (figures and table), ``presets`` (GPU/model roofline profiles),
``cli`` (the ``ppd-sim`` command). See docs/sim.md.
"""

from __future__ import annotations

from ppd_sim.cluster import ClusterSpec, Hardware
from ppd_sim.engine import RequestHints, RouterBehaviour, SimResult, Simulation
from ppd_sim.workload import Conversation, WorkloadSpec, synthetic
from ppd_sim.workload_file import load_trace

__all__ = [
    "ClusterSpec",
    "Conversation",
    "Hardware",
    "RequestHints",
    "RouterBehaviour",
    "SimResult",
    "Simulation",
    "WorkloadSpec",
    "load_trace",
    "synthetic",
]
