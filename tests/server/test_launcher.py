"""The embedded-cluster launcher: exact worker command lines (ppd-worker and real SGLang)."""

from __future__ import annotations

import itertools

from ppd_server.cli import main
from ppd_server.config import RouterConfig
from ppd_server.fleet.launcher import plan_cluster, sglang_argv, with_workers


def ports():
    return itertools.count(41000)


def test_sglang_backend_builds_the_real_sglang_commands():
    cfg = RouterConfig(backend="sglang", model_path="meta-llama/Llama-3.1-8B-Instruct", embedded="1P2D", tp=2)
    plans = plan_cluster(cfg, ports(), cpus=[0, 1])
    assert [p.role for p in plans] == ["prefill", "decode", "decode"]
    py = plans[0].argv[0]
    assert list(plans[0].argv) == [
        py,
        "-m",
        "sglang.launch_server",
        "--model-path",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--host",
        "127.0.0.1",
        "--port",
        "41000",
        "--base-gpu-id",
        "0",
        "--tp",
        "2",
        "--enable-cache-report",
        "--enable-metrics",
        "--disaggregation-mode",
        "prefill",
        "--disaggregation-bootstrap-port",
        "41001",
    ]
    assert list(plans[1].argv[3:]) == [
        "--model-path",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--host",
        "127.0.0.1",
        "--port",
        "41002",
        "--base-gpu-id",
        "2",
        "--tp",
        "2",
        "--enable-cache-report",
        "--enable-metrics",
        "--disaggregation-mode",
        "decode",
        "--disaggregation-decode-enable-radix-cache",
        "--disaggregation-decode-enable-conditional-agg",
    ]
    assert plans[2].argv[plans[2].argv.index("--base-gpu-id") + 1] == "4"
    assert all(p.cpu is None for p in plans), "GPU workers are not pinned to a CPU core"


def test_unified_sglang_worker_has_no_disaggregation_flags():
    argv = sglang_argv("unified", "m", 5, None, base_gpu_id=0, tp=1, python="python")
    assert "--disaggregation-mode" not in argv and argv[:3] == ["python", "-m", "sglang.launch_server"]


def test_embedded_ppd_workers_one_core_each_and_roles():
    cfg = RouterConfig(embedded="1P1D", model="synthetic", kv_link_gbps=5.0)
    plans = plan_cluster(cfg, ports(), cpus=[0, 1])
    prefill, decode = plans
    assert prefill.cpu == 0 and decode.cpu == 1
    pa, da = list(prefill.argv), list(decode.argv)
    assert pa[pa.index("--disaggregation-mode") + 1] == "prefill"
    assert pa[pa.index("--disaggregation-bootstrap-port") + 1] == str(prefill.bootstrap_port)
    assert pa[pa.index("--model") + 1] == "synthetic" and pa[pa.index("--threads") + 1] == "1"
    assert pa[pa.index("--kv-link-gbps") + 1] == "5.0"
    assert "--disaggregation-decode-enable-radix-cache" in da and "--disaggregation-decode-enable-conditional-agg" in da
    cfg2 = with_workers(cfg, plans)
    assert cfg2.prefill[0].url == prefill.url and cfg2.prefill[0].bootstrap_port == prefill.bootstrap_port
    assert cfg2.decode == (decode.url,) and cfg2.has_external_workers
    assert cfg2.link_gbps == 5.0, "the cost model assumes the capped embedded link"


def test_unified_layout():
    plans = plan_cluster(RouterConfig(embedded="2R"), ports(), cpus=[0])
    assert [p.role for p in plans] == ["unified", "unified"] and "--disaggregation-mode" not in plans[0].argv


def test_dry_run_prints_the_commands(capsys):
    assert main(["--backend", "sglang", "--model-path", "org/model", "--embedded", "1P1D", "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "sglang.launch_server" in lines[0] and "--disaggregation-mode prefill" in lines[0]


def test_mixed_embedded_layout_starts_every_role_in_order():
    cfg = RouterConfig(embedded="1P2D1R", model="synthetic")
    assert (cfg.embedded_layout.prefill, cfg.embedded_layout.decode, cfg.embedded_layout.unified) == (1, 2, 1)
    assert str(cfg.embedded_layout) == "1P2D1R"
    plans = plan_cluster(cfg, ports(), cpus=[0, 1])
    assert [p.role for p in plans] == ["prefill", "decode", "decode", "unified"]
    assert "--disaggregation-mode" not in plans[3].argv  # ppd-worker's default mode is null (unified)
    assert len({p.argv[p.argv.index("--port") + 1] for p in plans}) == 4


def test_embedded_workers_never_get_the_routers_own_port(monkeypatch):
    # The OS may hand a just-released port out again; the router binds its port only after its
    # workers start, so a worker must never be planned on it.
    import ppd_server.fleet.launcher as launcher

    offered = iter([30000, 30000, 41000, 30000, 41001, 41002])
    monkeypatch.setattr(launcher, "free_port", lambda: next(offered))
    plans = plan_cluster(RouterConfig(port=30000, embedded="1P1D", model="synthetic"), cpus=[0, 1])
    used = [int(p.argv[p.argv.index("--port") + 1]) for p in plans]
    used += [int(p.argv[p.argv.index("--disaggregation-bootstrap-port") + 1]) for p in plans if p.role == "prefill"]
    assert 30000 not in used and len(set(used)) == len(used)


def _flag(argv, name):
    return argv[argv.index(name) + 1] if name in argv else None


def test_embedded_workers_on_one_gpu_share_it_by_memory_fraction():
    cfg = RouterConfig(embedded="1P1D", device="cuda", gpu_memory_fraction=0.45).validate()
    plans = plan_cluster(cfg, ports(), cpus=[0, 1])
    assert [(_flag(list(p.argv), "--device"), _flag(list(p.argv), "--memory-fraction")) for p in plans] == [
        ("cuda", "0.45"),
        ("cuda", "0.45"),
    ]
    assert all(p.cpu is None for p in plans), "GPU workers are not pinned to a CPU core"


def test_embedded_workers_round_robin_over_a_device_list():
    cfg = RouterConfig(embedded="2P2D", device="cuda:0,cuda:1").validate()
    plans = plan_cluster(cfg, ports(), cpus=[0, 1])
    assert [(p.role, _flag(list(p.argv), "--device")) for p in plans] == [
        ("prefill", "cuda:0"),
        ("prefill", "cuda:1"),
        ("decode", "cuda:0"),
        ("decode", "cuda:1"),
    ]
    assert all("--memory-fraction" not in p.argv for p in plans)


def test_cpu_workers_get_no_device_flag(capsys):
    assert main(["--embedded", "1P1D", "--device", "cpu", "--dry-run"]) == 0
    assert "--device" not in capsys.readouterr().out


def test_bad_device_or_fraction_is_a_one_line_error(capsys):
    assert main(["--device", "tpu:0", "--dry-run"]) == 2
    assert "tpu:0" in capsys.readouterr().err
    assert main(["--device", "cuda", "--gpu-memory-fraction", "1.5", "--dry-run"]) == 2
    assert "gpu_memory_fraction" in capsys.readouterr().err


def test_decode_rows_tokens_reaches_every_embedded_worker(capsys):
    cfg = RouterConfig(embedded="1P2D", model="synthetic", decode_rows_tokens=4096).validate()
    plans = plan_cluster(cfg, ports(), cpus=[0, 1])
    assert [_flag(list(p.argv), "--decode-rows-tokens") for p in plans] == ["4096"] * 3
    unset = plan_cluster(RouterConfig(embedded="1P1D", model="synthetic").validate(), ports(), cpus=[0, 1])
    assert all("--decode-rows-tokens" not in p.argv for p in unset), "unset: the worker's own default"
    assert main(["--embedded", "1P1D", "--decode-rows-tokens", "0", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("--decode-rows-tokens 0") == 2
    assert main(["--decode-rows-tokens", "-1", "--dry-run"]) == 2
    assert "decode_rows_tokens" in capsys.readouterr().err
