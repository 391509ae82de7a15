"""Routing: the data policies see, the policies, their registry and the cost model.

Modules (one concept each):

* ``types``      - frozen views a policy sees (RequestView, ClusterView, WorkerView, SessionView)
                   and returns (Decision, Candidate); CostCoefficients; NoWorkerAvailable.
* ``latency``    - the pure TTFT/TPOT formulas every policy predicts with.
* ``placement``  - which P, D or unified worker (load, cache affinity, deterministic ties).
* ``policies/``  - ``make_policy(spec, **params)``, ``POLICY_NAMES``; one policy per file.
* ``cost_model`` - per-worker coefficients from a profile, refitted online (``rls``), with
                   predicted-vs-observed error statistics.

Everything here is pure (no I/O, no clock): the router and the simulator run the same code.
See README.md beside this file for the model and for adding a policy.
"""
