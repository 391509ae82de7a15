"""Shared e2e fixtures: a real ``ppd-server`` subprocess with its embedded cluster.

``ppd_router`` (session scope) is the base URL (``http://127.0.0.1:PORT``, no ``/v1``) of a
``ppd-server`` started as ``python -m ppd_server --embedded 1P1D --model smollm2 --policy ppd``
on a free port: real SmolLM2 in one prefill and one decode ``ppd-worker`` process, real KV
transfer. Point the openai client at ``f"{ppd_router}/v1"``. Tests that change the policy at run
time (``PUT /admin/policy``) must restore it (``processes.router_policy`` does). The process
launcher is ``tests/processes.py``.

``ppd_router_factory(policy="ppd", embedded="1P1D", model="smollm2", args=())`` starts another
one (each costs a model load per worker); all are stopped at the end of the session: SIGTERM to
the router (which stops its workers by PID), then SIGKILL of the router's process group (which
holds its workers) if it did not exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from processes import STARTUP_TIMEOUT_S, Process, free_port, router_argv


@pytest.fixture(scope="session")
def ppd_router_factory() -> Iterator[Callable[..., str]]:
    started: list[Process] = []

    def start(policy: str = "ppd", embedded: str = "1P1D", model: str = "smollm2", args: tuple[str, ...] = ()) -> str:
        port = free_port()
        argv = router_argv(
            port,
            "--policy",
            policy,
            "--embedded",
            embedded,
            "--model",
            model,
            "--load-interval",
            "0.5",
            "--startup-timeout",
            str(STARTUP_TIMEOUT_S),
            *args,
        )
        router = Process("ppd-server", argv, port)
        started.append(router)
        router.wait_healthy(timeout=STARTUP_TIMEOUT_S)
        return router.url

    try:
        yield start
    finally:
        for router in started:
            router.stop()


@pytest.fixture(scope="session")
def ppd_router(ppd_router_factory: Callable[..., str]) -> str:
    """Base URL of a ppd-server (embedded 1P1D, real SmolLM2, policy ppd)."""
    return ppd_router_factory()
