"""The simulator's terms for a live stack (benchmarks/validate_sim.py measures them): a
page-granular prefix cache and a per-request overhead outside the forward passes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ppd_server.routing.latency import prefill_ms
from ppd_server.routing.policies import make_policy
from ppd_server.routing.types import CostCoefficients
from ppd_sim import ClusterSpec, Conversation, Hardware, Simulation
from ppd_sim.cli import main as sim_main
from ppd_sim.kv import KVPool, page_aligned

COEFS = CostCoefficients(5.0, 1.0, 0.2, 20.0, 3.0, 1.0)
HAND = Hardware(COEFS, 100_000, kv_capacity_tokens=100_000, chunk_tokens=4096, link_gb_per_s=1.0)


def run(policy: str, hw: Hardware, convs: tuple[Conversation, ...]):
    return Simulation(make_policy(policy), ClusterSpec.parse("1P1D"), hw, convs).run()


def test_a_page_granular_cache_hits_whole_pages_only():
    assert [page_aligned(n, 16) for n in (0, 15, 16, 31, 33)] == [0, 0, 16, 16, 32]
    assert page_aligned(33, 1) == 33
    pool = KVPool(0, page_tokens=16)
    pool.release("c", 0, 104)  # 104 tokens cached: 6 whole pages and 8 tokens
    assert pool.hit("c", 200) == 96 and pool.hit("c", 50) == 48  # (the last prompt token is always computed)
    with pytest.raises(ValueError, match="page size"):
        KVPool(0, page_tokens=0)


def test_pages_make_a_local_append_recompute_the_partial_last_page():
    conv = (Conversation("c0", 0.0, ((100, 4), (20, 3)), (50.0,)),)
    plain = run("local", HAND, conv).requests[1]
    paged = run("local", replace(HAND, page_tokens=16), conv).requests[1]
    # turn 1 left 104 tokens (prompt + answer); 96 of them are whole pages
    assert (plain.cached_tokens, paged.cached_tokens) == (104, 96)
    assert paged.ttft_ms - plain.ttft_ms == pytest.approx(prefill_ms(COEFS, 28, 96) - prefill_ms(COEFS, 20, 104))


def test_the_request_overhead_delays_every_first_token_by_exactly_that_much():
    conv = (Conversation("c0", 0.0, ((100, 4), (20, 3)), (50.0,)),)
    for policy in ("pd", "local"):
        base = run(policy, HAND, conv).requests
        slow = run(policy, replace(HAND, request_overhead_ms=25.0), conv).requests
        for b, s in zip(base, slow, strict=True):
            assert s.ttft_ms == pytest.approx(b.ttft_ms + 25.0)
            assert s.tpot_ms == pytest.approx(b.tpot_ms)  # the decode itself is untouched


@pytest.mark.parametrize(
    "argv,needle",
    [(["--page-tokens", "0"], "--page-tokens"), (["--request-overhead-ms", "-1"], "--request-overhead-ms")],
)
def test_bad_calibration_options_exit_2_naming_the_option(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        sim_main(argv)
    assert e.value.code == 2 and needle in capsys.readouterr().err
