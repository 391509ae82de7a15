"""Unit tests of the simulator's parts: workload generation and traces, KV pool, link, cluster spec."""

from __future__ import annotations

import json

import pytest

from ppd_sim.cluster import ClusterSpec
from ppd_sim.events import EventLoop
from ppd_sim.kv import KVPool
from ppd_sim.link import KVLink
from ppd_sim.presets import kv_capacity_tokens, preset_profile
from ppd_sim.workload import Conversation, WorkloadSpec, synthetic
from ppd_sim.workload_file import load_trace


def test_synthetic_is_a_function_of_the_seed():
    spec = WorkloadSpec(qps=5, duration_s=10, workload="mixed", turns_min=2, turns_max=6, seed=3)
    assert synthetic(spec) == synthetic(spec)
    assert synthetic(spec) != synthetic(
        WorkloadSpec(qps=5, duration_s=10, workload="mixed", turns_min=2, turns_max=6, seed=4)
    )


def test_presets_without_jitter_are_exact():
    convs = synthetic(
        WorkloadSpec(
            qps=2, duration_s=5, workload="big_paste", first_turn="large", jitter=0.0, turns_min=3, turns_max=3
        )
    )
    assert convs and all(c.turns == ((1024, 1024), (512, 64), (512, 64)) for c in convs)
    assert all(len(c.think_ms) == 2 for c in convs)
    assert all(0 <= c.arrival_ms < 5000 for c in convs)
    assert [c.arrival_ms for c in convs] == sorted(c.arrival_ms for c in convs)


def test_prompt_is_the_history_plus_the_new_input():
    c = Conversation("x", 0.0, ((100, 10), (20, 5), (7, 1)), (0.0, 0.0))
    assert [c.prompt_tokens(k) for k in range(3)] == [100, 130, 142]
    assert c.peak_tokens == 143


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"qps": 0}, "--qps"),
        ({"duration_s": -1}, "--duration"),
        ({"workload": "nope"}, "'nope'"),
        ({"first_turn": "huge"}, "'huge'"),
        ({"turns_min": 5, "turns_max": 2}, "--turns"),
        ({"qps": 1000, "duration_s": 3600}, "limit is 100000"),
        ({"jitter": 1.5}, "--jitter"),
    ],
)
def test_workload_spec_errors_name_the_value(kw, needle):
    base = {"qps": 1.0, "duration_s": 10.0}
    with pytest.raises(ValueError, match=needle.replace("-", r"\-")):
        synthetic(WorkloadSpec(**{**base, **kw}))


def test_trace_loads_in_order_and_bad_lines_are_named(tmp_path):
    good = tmp_path / "t.jsonl"
    good.write_text(json.dumps([[100, 20], [30, 40]]) + "\n\n" + json.dumps([[5, 5]]) + "\n")
    convs = load_trace(good, WorkloadSpec(qps=100, duration_s=60))
    assert [c.turns for c in convs] == [((100, 20), (30, 40)), ((5, 5),)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps([[1, 2]]) + "\n" + json.dumps([[1, -2]]) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        load_trace(bad, WorkloadSpec(qps=1, duration_s=10))
    with pytest.raises(ValueError, match="cannot read trace"):
        load_trace(tmp_path / "missing.jsonl", WorkloadSpec(qps=1, duration_s=10))


def test_kv_pool_pins_caches_and_evicts_lru():
    pool = KVPool(100)
    assert pool.admit("a", 10, 30) == 0
    pool.release("a", 30, 30)
    assert pool.pinned == 0 and pool.hit("a", 50) == 30 and pool.hit("a", 20) == 19  # last token always computed
    assert pool.admit("b", 10, 40) == 0
    pool.release("b", 40, 40)
    assert pool.admit("c", 10, 50) == 0  # 30 + 40 cached + 50 pinned > 100: "a" (LRU) goes
    assert pool.hit("a", 50) == 0 and pool.hit("b", 50) == 40 and pool.evicted_tokens == 30
    assert pool.admit("d", 10, 60) is None  # pinned slots are never evicted
    no_keep = KVPool(0, keeps_prefixes=False)
    assert no_keep.admit("a", 10, 10) == 0
    no_keep.release("a", 10, 10)
    assert no_keep.hit("a", 50) == 0


def test_link_is_fifo_at_its_bandwidth():
    loop = EventLoop()
    link = KVLink(1.0, loop)  # 1 GB/s = 1e6 bytes per ms
    done: list[tuple[str, float]] = []
    link.send(2_000_000, lambda: done.append(("a", loop.now)))
    link.send(1_000_000, lambda: done.append(("b", loop.now)))
    assert link.backlog_bytes() == 3_000_000
    loop.at(1.0, lambda: done.append(("backlog", link.backlog_bytes())))
    assert loop.run(1e9, 100) is None
    assert done == [("backlog", 2_000_000), ("a", 2.0), ("b", 3.0)]
    assert link.bytes_moved == 3_000_000 and link.link_gbps == 8.0


@pytest.mark.parametrize(
    ("text", "expected"), [("1P3D", (1, 3, 0)), ("2p2d", (2, 2, 0)), ("4R", (0, 0, 4)), ("1P2D1R", (1, 2, 1))]
)
def test_cluster_spec_parses(text, expected):
    s = ClusterSpec.parse(text)
    assert (s.prefill, s.decode, s.unified) == expected


@pytest.mark.parametrize("text", ["", "1P", "3D", "1P3X", "P3D", "0P0D", "65R"])
def test_cluster_spec_rejects(text):
    with pytest.raises(ValueError, match="--cluster"):
        ClusterSpec.parse(text)


def test_llama_h100_preset_matches_the_anchor_numbers():
    c = preset_profile("llama-3.1-8b", "h100")["coefficients"]
    assert 0.02 < c["prefill_per_token_ms"] < 0.04  # ~27-32 us/token at 50-60% MFU
    assert 4.8 <= c["decode_base_ms"] < 7.0  # >= 16 GB / 3.35 TB/s
    assert 300_000 < kv_capacity_tokens("llama-3.1-8b", "h100") < 500_000
    with pytest.raises(ValueError, match="--gpu"):
        preset_profile("llama-3.1-8b", "tpu")


def test_h200_preset_has_more_bandwidth_and_memory_than_h100():
    h100, h200 = (preset_profile("llama-3.1-8b", g)["coefficients"] for g in ("h100", "h200"))
    assert h200["decode_base_ms"] < h100["decode_base_ms"] * 0.75  # 4.8 vs 3.35 TB/s
    assert h200["prefill_per_token_ms"] == h100["prefill_per_token_ms"]  # the same compute
    assert kv_capacity_tokens("llama-3.1-8b", "h200") > 1.9 * kv_capacity_tokens("llama-3.1-8b", "h100")
