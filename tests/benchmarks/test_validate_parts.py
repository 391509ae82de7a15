"""validate_sim's parts without processes: the engine's token accounting of a measured run, the
trace the simulator replays, the simulator's argument steps and the printed decomposition."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import validate_compare  # noqa: E402
import validate_decompose  # noqa: E402
import validate_render  # noqa: E402

# One session as ppd-bench records it: turn 2 asked for 50 words; the engine saw the previous
# prompt (1630) + answer (32) + the append with its template markers (60) = 1722 tokens, of which
# 1648 cached (whole 16-token pages).
MEASURED = {
    "records": [
        {"session": "s0", "turn": 1, "ok": True, "requested_input_tokens": 1600, "prompt_tokens": 1630,
         "completion_tokens": 32, "cached_tokens": 0},
        {"session": "s0", "turn": 2, "ok": True, "requested_input_tokens": 50, "prompt_tokens": 1722,
         "completion_tokens": 32, "cached_tokens": 1648},
        {"session": "s0", "turn": 3, "ok": False, "requested_input_tokens": 40},
    ],
    "summary": {"turn2plus": {"ttft_ms": {"p50": 170.0}}},
}  # fmt: skip
WORKLOAD = [
    json.dumps(
        {
            "id": "s0",
            "arrival_ms": 0.0,
            "turns": [
                {"input_tokens": 1600, "output_tokens": 32},
                {"input_tokens": 50, "output_tokens": 32, "think_ms": 500.0},
                {"input_tokens": 40, "output_tokens": 32, "think_ms": 500.0},
            ],
        }
    )
]


def test_turn_tokens_reads_what_the_engine_prefilled():
    t = validate_decompose.turn_tokens(MEASURED)
    assert t == {"turns": 1, "new_tokens_p50": 74, "asked_tokens_p50": 50, "append_with_template_p50": 60}
    assert validate_decompose.turn_tokens({"records": []}) == {}


def test_engine_trace_replays_the_turns_in_the_engines_tokens():
    conv = json.loads(validate_decompose.engine_trace(MEASURED, WORKLOAD)[0])
    assert [(t["input_tokens"], t["output_tokens"]) for t in conv["turns"]] == [(1630, 32), (60, 32), (40, 32)]
    assert conv["turns"][1]["think_ms"] == 500.0 and conv["arrival_ms"] == 0.0  # the schedule is kept


def _args(**kw):
    base = {"link_gbs": "auto", "policy": "ppd", "sim_args": "", "tolerance": 0.25}
    return argparse.Namespace(**{**base, **kw})


def test_each_simulator_step_adds_one_measured_term(tmp_path):
    (tmp_path / "workload.jsonl").write_text(WORKLOAD[0] + "\n")
    info = {
        "kv_transfer_speed_gb_s": 0.6,
        "chunked_prefill_size": 512,
        "max_total_num_tokens": 32768,
        "page_size": 16,
        "decomposition": {"request_overhead_ms": 21.04},
    }
    steps = [validate_compare.sim_argv(_args(), tmp_path, info, k) for k in range(len(validate_compare.STEPS))]
    assert str(tmp_path / "workload.jsonl") in steps[0] and "--page-tokens" not in steps[0]
    assert str(tmp_path / "workload_engine.jsonl") in steps[1] and "exact" in steps[1]
    assert steps[2][steps[2].index("--page-tokens") + 1] == "16" and "--request-overhead-ms" not in steps[2]
    assert steps[3][steps[3].index("--request-overhead-ms") + 1] == "21.0"
    assert steps[3][steps[3].index("--link-gbs") + 1] == "0.6"


def test_the_decomposition_names_every_term():
    probe = {
        "rounds": 3,
        "ttft_ms": {"router": 140.0, "worker_chat": 128.0, "worker_generate": 120.0},
        "router_routes": ["local", "local", "local"],
        "prompt_tokens": 1700,
        "cached_tokens": 1632,
        "template_tokenize_ms": 4.0,
        "router_hop_ms": 12.0,
        "worker_chat_ms": 8.0,
        "request_overhead_ms": 20.0,
    }
    profile = {
        "coefficients": {
            "decode_base_ms": 22.0,
            "decode_per_kctx_ms": 4.0,
            "decode_per_seq_ms": 2.0,
            "prefill_attn_ms_per_ktok2": 420.0,
            "prefill_base_ms": 58.0,
            "prefill_per_token_ms": 0.3,
        }
    }
    steps = [{"step": "plain", "what": "as before", "ratios": {"turn-2+ TTFT p50": 0.66}}]
    lines = validate_render.decomposition_lines(
        MEASURED, {"page_size": 16, "decomposition": probe}, profile, validate_decompose.turn_tokens(MEASURED), steps
    )
    text = "\n".join(lines)
    assert "a median 74 tokens prefilled" in text and "asked for 50" in text
    assert "router hop (token count, decision, proxy, relay) 12 ms" in text and "68 new over 1632 cached" in text
    assert "per-request overhead of 20 ms" in text and "+30 ms against the idle turn" in text
    assert "`plain` (as before): sim / measured turn-2+ TTFT p50 0.66" in text
    failed = validate_render.decomposition_lines(MEASURED, {"decomposition": {"error": "never local"}}, {}, {}, [])
    assert failed and "never local" in failed[0]
