"""ppd-bench: a multi-turn benchmark for OpenAI-compatible endpoints, and the measured comparison
of PPD against classic P/D routers on the embedded CPU cluster.

Function API (what the CLI calls; the calibration and report tools call it too):

* workloads: :mod:`ppd_sim.workload` (``generate_sessions``, ``read_sessions``, ``write_sessions``)
  and :func:`ppd_bench.importer.import_trace`;
* :func:`ppd_bench.driver.run` (``RunConfig``, sessions) -> result document (JSON-safe dict);
* :func:`ppd_bench.stats.summarize` (per turn class figures from ``TurnRecord`` s);
* :func:`ppd_bench.compare.compare` (``CompareConfig``, ``RunConfig``, sessions) -> comparison document;
* :func:`ppd_bench.plot.plot_all` (result documents, out dir) -> PNG paths;
* :func:`ppd_bench.report.run_table` / ``compare_table``: the text tables.

Heavy parts (matplotlib, process launching) are imported lazily by the modules that need them.
"""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
