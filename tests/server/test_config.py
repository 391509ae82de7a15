"""Config: one source of defaults, YAML < env < flags, errors that name the field; CLI parsing."""

from __future__ import annotations

import pytest

from ppd_server.cli import _flags, build_parser, main
from ppd_server.config import ConfigError, EmbeddedLayout, PrefillSpec, RouterConfig, load_config


def parse(*argv: str) -> dict:
    return _flags(build_parser().parse_args(list(argv)))


def test_defaults_come_from_the_dataclass():
    cfg = load_config(parse(), environ={})
    assert cfg == RouterConfig()
    assert cfg.policy == "ppd" and cfg.embedded_layout == EmbeddedLayout(1, 1, 0)


def test_prefill_flag_takes_an_optional_bootstrap_port_like_sglang_router():
    cfg = load_config(
        parse(
            "--prefill",
            "http://127.0.0.1:31001",
            "31998",
            "--prefill",
            "http://127.0.0.1:31003",
            "--decode",
            "http://127.0.0.1:31002",
        ),
        environ={},
    )
    assert cfg.prefill == (PrefillSpec("http://127.0.0.1:31001", 31998), PrefillSpec("http://127.0.0.1:31003", None))
    assert cfg.decode == ("http://127.0.0.1:31002",) and cfg.has_external_workers


def test_precedence_yaml_then_env_then_flags(tmp_path):
    y = tmp_path / "ppd.yaml"
    y.write_text("policy: threshold:256\nload_interval_s: 2.0\nmax_retries: 1\nembedded: 1P2D\n")
    cfg = load_config(parse("--max-retries", "0"), yaml_path=str(y), environ={"PPD_LOAD_INTERVAL_S": "0.25"})
    assert (cfg.policy, cfg.load_interval_s, cfg.max_retries, cfg.embedded) == ("threshold:256", 0.25, 0, "1P2D")
    cfg = load_config({}, environ={"PPD_POLICY": "pd", "PPD_DECODE": "http://a:1", "PPD_PREFILL": "http://b:2 9000"})
    assert cfg.policy == "pd" and cfg.prefill == (PrefillSpec("http://b:2", 9000),)


@pytest.mark.parametrize(
    "flags, env, field",
    [
        ({"policy": "fastest"}, {}, "policy"),
        ({"port": 0}, {}, "port"),
        ({"load_interval_s": 0.0}, {}, "load_interval_s"),
        ({"embedded": "3X"}, {}, "embedded"),
        ({"decode": ["http://127.0.0.1:1"]}, {}, "prefill"),
        ({"worker": ["ftp://x"]}, {}, "worker"),
        ({}, {"PPD_MAX_RETRIES": "many"}, "max_retries"),
        ({"backend": "sglang"}, {}, "model_path"),
        ({"max_retries": 99}, {}, "max_retries"),
    ],
    ids=[
        "policy",
        "port",
        "load-interval",
        "embedded",
        "prefill-missing",
        "worker-url",
        "env-type",
        "sglang-model",
        "retries",
    ],
)
def test_invalid_settings_name_the_field(flags, env, field):
    with pytest.raises(ConfigError) as e:
        load_config(flags, environ=env)
    assert e.value.field == field and field in str(e.value)


def test_yaml_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("polcy: ppd\n")
    with pytest.raises(ConfigError, match="polcy"):
        load_config({}, yaml_path=str(bad), environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config({}, yaml_path=str(tmp_path / "missing.yaml"), environ={})


def test_cli_reports_bad_values_without_a_traceback(capsys):
    assert main(["--policy", "nope"]) == 2
    err = capsys.readouterr().err
    assert "policy" in err and "nope" in err and "Traceback" not in err
    assert main(["--prefill", "http://127.0.0.1:1", "abc", "--decode", "http://127.0.0.1:2"]) == 2
    assert "bootstrap port" in capsys.readouterr().err


def test_help_lists_policies_and_env(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "threshold:N" in out and "PPD_" in out and "--embedded" in out
