"""Routing: the data policies see, the policies, their registry and the cost model.

Modules (one concept each):

* ``types``      - frozen views a policy sees (RequestView, ClusterView, WorkerView, SessionView)
                   and returns (Decision, Candidate); CostCoefficients; NoWorkerAvailable.
* ``latency``    - the pure TTFT/TPOT formulas every policy predicts with, the committed local
                   load and the TPOT budget of a decode worker.
* ``local_load`` - the router's bookkeeping of the D-local requests in flight per decode worker.
* ``placement``  - which P, D or unified worker (load, cache affinity, deterministic ties).
* ``policies/``  - ``make_policy(spec, **params)``, ``POLICY_NAMES``, ``POLICY_SPECS``; one policy per file.
* ``cost_model`` - per-worker coefficients from a profile, refitted online by ``robust_fit``
                   (a robust MAP fit over a window), with predicted-vs-observed error statistics.
* ``linalg``     - the small solvers and statistics the fits share (also used by ``profile``).
* ``rls``        - recursive least squares, for the token-count estimator (not the cost model).

Everything here except the two bookkeeping classes (``LocalLoad``, ``CostModel``) is pure (no
I/O, no clock): the router and the simulator run the same code. See README.md beside this file
for the model and for adding a policy.
"""
