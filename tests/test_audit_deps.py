"""scripts/audit_deps.py decides pass/fail from pip-audit's report: a known vulnerability fails
unless ignored with a reason; an unreachable or empty-handed service warns and passes (fails
only with --strict). pip-audit is replaced by a stub printing a canned report."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "audit_deps.py"


@pytest.fixture
def audit(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("audit_deps", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "IGNORE_FILE", tmp_path / "ignore.txt")

    def run(stdout: str, stderr: str = "", rc: int = 0, ignore: str = "", *args: str) -> int:
        stub = tmp_path / "pip-audit"
        stub.write_text(
            f"#!{sys.executable}\nimport sys\nsys.stdout.write({stdout!r})\nsys.stderr.write({stderr!r})\n"
            f"open({str(tmp_path / 'argv')!r}, 'w').write(' '.join(sys.argv))\nsys.exit({rc})\n"
        )
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
        (tmp_path / "ignore.txt").write_text(ignore)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
        return mod.main(list(args))

    run.argv = lambda: (tmp_path / "argv").read_text()  # type: ignore[attr-defined]
    return run


def _report(vulns: list[str], skipped: int = 0) -> str:
    deps = [{"name": "pkg", "version": "1.0", "vulns": [{"id": v, "fix_versions": ["1.1"]} for v in vulns]}]
    deps += [{"name": f"s{i}", "skip_reason": "not found"} for i in range(skipped)]
    return json.dumps({"dependencies": deps, "fixes": []})


def test_a_vulnerability_fails_unless_ignored_with_a_reason(audit, capsys):
    assert audit(_report(["GHSA-1"]), rc=1) == 1
    assert "GHSA-1" in capsys.readouterr().err
    assert audit(_report([]), ignore="GHSA-1  not reachable: we never parse untrusted TOML\n") == 0
    assert "--ignore-vuln GHSA-1" in audit.argv()
    with pytest.raises(SystemExit):
        audit(_report([]), ignore="GHSA-1\n")


def test_unreachable_service_warns_and_passes_unless_strict(audit, capsys):
    err = "requests.exceptions.ConnectionError: Max retries exceeded with url: /v1/query\n"
    assert audit("", err, 1) == 0
    assert "WARNING: dependency audit NOT done" in capsys.readouterr().err
    assert audit("", err, 1, "", "--strict") == 1
    assert audit(_report([], skipped=10)) == 0, "a service that knows none of the packages audited nothing"
    assert "answered for 1 of 11" in capsys.readouterr().err
    assert audit("", "some other crash\n", 2) == 1, "a broken audit is not a network outage"
