"""The shared workload format: generators, files (both formats), scheduling, trace import, and
ppd-sim reading the same names and files."""

from __future__ import annotations

import itertools
import json

import pytest
from ppd_bench.importer import import_trace

from ppd_sim.workload import GENERATORS, WORKLOAD_NAMES, Session, WorkloadSpec, generate_sessions, schedule, synthetic
from ppd_sim.workload_file import load_trace, read_sessions, write_sessions


@pytest.mark.parametrize(
    ("name", "turns", "first", "out"),
    [
        ("long-context", (5, 5), (9_000, 11_000), (100, 100)),
        ("long-context-cpu", (5, 5), (1_350, 1_650), (32, 32)),
        ("long-prompt-cpu", (4, 4), (1_800, 2_200), (32, 32)),
        ("agent", (8, 16), (1_500, 2_500), (4, 300)),
        ("agent-cpu", (8, 16), (300, 500), (4, 48)),
        ("chat", (2, 12), (4, 4096), (4, 2048)),
        ("chat-cpu", (2, 6), (4, 512), (4, 96)),
    ],
)
def test_named_generators_keep_their_shapes(name, turns, first, out):
    sessions = generate_sessions(name, 200, seed=1)
    assert len(sessions) == 200 and len({s.session_id for s in sessions}) == 200
    for s in sessions:
        assert turns[0] <= len(s.turns) <= turns[1]
        assert first[0] <= s.turns[0][0] <= first[1]
        assert all(out[0] <= o <= out[1] for _, o in s.turns)
        assert s.think_ms is not None and len(s.think_ms) == len(s.turns) - 1
    if name.startswith("agent"):
        thinks = [t for s in sessions for t in s.think_ms or ()]
        assert sum(thinks) / len(thinks) < 300  # short tool think times
    assert generate_sessions(name, 5, seed=1) == sessions[:5]
    assert generate_sessions(name, 5, seed=2) != sessions[:5]


def test_every_name_is_known_to_the_simulator_spec():
    assert set(WORKLOAD_NAMES) == set(GENERATORS)
    for name in WORKLOAD_NAMES:
        convs = synthetic(WorkloadSpec(qps=2, duration_s=3, workload=name, seed=0))
        assert convs and all(len(c.think_ms) == len(c.turns) - 1 for c in convs)


def test_files_round_trip_and_the_old_pair_format_still_loads(tmp_path):
    sessions = generate_sessions("agent-cpu", 4, seed=3)
    sessions[1] = Session(sessions[1].session_id, sessions[1].turns, sessions[1].think_ms, 125.5)
    path = tmp_path / "w.jsonl"
    assert write_sessions(path, sessions) == 4
    back = read_sessions(path)
    assert [s.turns for s in back] == [s.turns for s in sessions]
    assert back[1].arrival_ms == 125.5 and back[0].arrival_ms is None
    assert all(a == pytest.approx(b, abs=1e-3) for s, t in zip(back, sessions) for a, b in zip(s.think_ms, t.think_ms))
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps([[100, 20], [30, 40]]) + "\n")
    (s,) = read_sessions(old)
    assert s.turns == ((100, 20), (30, 40)) and s.think_ms is None


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("not json", "line 2 is not valid JSON"),
        ('{"turns": []}', "line 2: expected"),
        ('{"turns": [{"input_tokens": 0, "output_tokens": 5}]}', "bad turn 1"),
        (
            '{"turns": [{"input_tokens": 5, "output_tokens": 5}, {"input_tokens": 5, "output_tokens": 5, "think_ms": '
            "-1}]}",
            "bad think_ms -1",
        ),
        ('{"turns": [{"input_tokens": 5, "output_tokens": 5}], "arrival_ms": "soon"}', "bad arrival_ms 'soon'"),
        ("[[1, -2]]", "bad turn \\[1, -2\\]"),
    ],
)
def test_bad_lines_are_named(tmp_path, line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"turns": [{"input_tokens": 5, "output_tokens": 5}]}\n' + line + "\n")
    with pytest.raises(ValueError, match=needle):
        read_sessions(path)


def test_schedule_uses_recorded_arrivals_or_poisson():
    recorded = [Session("a", ((5, 5),), (), 300.0), Session("b", ((5, 5),), (), 100.0)]
    assert [(c.conversation_id, c.arrival_ms) for c in schedule(recorded, 1.0)] == [("b", 100.0), ("a", 300.0)]
    shapes = [Session(f"s{k}", ((5, 5), (5, 5))) for k in range(50)]
    convs = schedule(shapes, 10.0, seed=4, count=20, think_s=0.5)
    assert len(convs) == 20 and all(len(c.think_ms) == 1 for c in convs)
    gaps = [b.arrival_ms - a.arrival_ms for a, b in itertools.pairwise(convs)]
    assert all(g > 0 for g in gaps) and 30 < sum(gaps) / len(gaps) < 300  # ~100 ms at 10/s
    assert schedule(shapes, 10.0, seed=4, count=20, think_s=0.5) == convs
    assert len(schedule(shapes, 10.0, seed=4, duration_s=1.0)) < 50
    with pytest.raises(ValueError, match="rate"):
        schedule(shapes, -1.0)


def test_the_simulator_loads_the_new_format_with_its_arrivals(tmp_path):
    path = tmp_path / "w.jsonl"
    write_sessions(path, [Session("x", ((10, 2), (3, 4)), (250.0,), 50.0), Session("y", ((7, 1),), (), 10.0)])
    convs = load_trace(path, WorkloadSpec(qps=1, duration_s=60))
    assert [(c.arrival_ms, c.turns) for c in convs] == [(10.0, ((7, 1),)), (50.0, ((10, 2), (3, 4)))]
    assert convs[1].think_ms == (250.0,)


def test_ppd_sim_runs_a_named_workload_and_a_file(tmp_path):
    from ppd_sim.cli import main

    assert (
        main(
            [
                "--workload",
                "long-context-cpu",
                "--qps",
                "0.5",
                "--duration",
                "4",
                "--policies",
                "pd",
                "--quiet",
                "--json",
                str(tmp_path / "a.json"),
            ]
        )
        == 0
    )
    path = tmp_path / "w.jsonl"
    write_sessions(path, generate_sessions("agent-cpu", 3))
    assert (
        main(
            [
                "--trace",
                str(path),
                "--qps",
                "2",
                "--duration",
                "10",
                "--policies",
                "pd",
                "--quiet",
                "--json",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["config"]["conversations"] == 3


def test_request_log_import_recovers_new_inputs_and_think_times(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [
        {
            "conversation_id": "c1",
            "timestamp": 100.0,
            "prompt_tokens": 500,
            "completion_tokens": 50,
            "latency_ms": 1000,
        },
        {"conversation_id": "c2", "timestamp": 101.0, "prompt_tokens": 80, "completion_tokens": 20},
        {"conversation_id": "c1", "timestamp": 103.0, "prompt_tokens": 600, "completion_tokens": 40, "latency_ms": 500},
    ]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    a, b = import_trace(log)
    assert a.session_id == "c1" and a.turns == ((500, 50), (50, 40)) and a.think_ms == (2000.0,) and a.arrival_ms == 0.0
    assert b.turns == ((80, 20),) and b.arrival_ms == 1000.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"conversation_id": "c", "timestamp": 1}\n')
    with pytest.raises(ValueError, match="line 1: missing or bad field"):
        import_trace(bad)


def test_sharegpt_import(tmp_path):
    path = tmp_path / "sg.json"
    path.write_text(
        json.dumps(
            [
                {
                    "id": "q",
                    "conversations": [
                        {"from": "human", "value": "a b c d e f g h i j"},
                        {"from": "gpt", "value": "x " * 20},
                        {"from": "human", "value": "more words"},
                        {"from": "gpt", "value": "ok"},
                    ],
                }
            ]
        )
    )
    (s,) = import_trace(path)
    assert s.session_id == "q" and s.turns == ((13, 26), (3, 1))
