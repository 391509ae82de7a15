"""Dependency audit for CI: ``pip-audit`` over the installed environment (``scripts/lint.sh`` runs it).

Fails (exit 1) on a known vulnerability in an installed package unless its id is listed, with a
reason, in ``scripts/pip-audit-ignore.txt``. Never fails because a third-party service is down:
when the vulnerability service cannot be reached, or answers for too few packages to mean
anything (a mirror without the JSON API), it prints a clear WARNING and exits 0 - the audit then
proved nothing, and says so. ``--strict`` turns those warnings into failures (a release check).

    python scripts/audit_deps.py [--service pypi|osv] [--strict]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

IGNORE_FILE = Path(__file__).with_name("pip-audit-ignore.txt")
_NETWORK_MARKERS = ("ConnectionError", "ConnectTimeout", "ReadTimeout", "NameResolutionError", "Max retries exceeded")
_MIN_AUDITED_SHARE = 0.5  # below this share of packages answered, the service is not really there


def ignored_ids(path: Path | None = None) -> dict[str, str]:
    """``VULN-ID  reason...`` per line ('#' comments); an id without a reason is an error."""
    path = path or IGNORE_FILE
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        vid, _, reason = line.partition(" ")
        if not reason.strip():
            raise SystemExit(f"{path}:{n}: {vid} needs a reason after the id")
        out[vid] = reason.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--service", default="pypi", choices=("pypi", "osv"), help="vulnerability service (default: pypi)")
    p.add_argument("--strict", action="store_true", help="fail when the audit could not run (service unreachable)")
    p.add_argument("--timeout", type=int, default=15, help="seconds per service request (default: 15)")
    args = p.parse_args(argv)
    exe = shutil.which("pip-audit")
    if exe is None:
        print("[audit] pip-audit is not installed: install the dev extra (pip install -e '.[dev]')", file=sys.stderr)
        return 1
    ignore = ignored_ids()
    cmd = [exe, "--progress-spinner", "off", "-f", "json", "-s", args.service, "--timeout", str(args.timeout)]
    for vid in ignore:
        cmd += ["--ignore-vuln", vid]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return _unreachable(args.strict, "pip-audit ran past 600 s")
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        if any(m in proc.stderr for m in _NETWORK_MARKERS):
            return _unreachable(args.strict, tail[0])
        print(f"[audit] pip-audit failed (exit {proc.returncode}): {tail[0]}", file=sys.stderr)
        return 1
    deps = report.get("dependencies", [])
    audited = [d for d in deps if "skip_reason" not in d]
    vulnerable = [(d, v) for d in audited for v in d.get("vulns", []) if v["id"] not in ignore]
    for d, v in vulnerable:
        fix = ", ".join(v.get("fix_versions") or []) or "none yet"
        print(f"[audit] VULNERABLE {d['name']} {d['version']}: {v['id']} (fixed in: {fix})", file=sys.stderr)
    if vulnerable:
        print(
            f"[audit] {len(vulnerable)} known vulnerabilities; upgrade, or list the id with a reason in "
            f"{IGNORE_FILE.name}",
            file=sys.stderr,
        )
        return 1
    if deps and len(audited) < _MIN_AUDITED_SHARE * len(deps):
        return _unreachable(
            args.strict,
            f"the {args.service} service answered for {len(audited)} of {len(deps)} installed packages "
            "(the others 'not found': a mirror without the vulnerability API?)",
        )
    print(
        f"[audit] {len(audited)} packages audited against {args.service}: no known vulnerability "
        f"({len(ignore)} ignored by {IGNORE_FILE.name}, {len(deps) - len(audited)} not on the index)"
    )
    return 0


def _unreachable(strict: bool, why: str) -> int:
    print(
        f"[audit] WARNING: dependency audit NOT done - {why}. Not failing: CI must not depend on a "
        "third-party service being up. Rerun where the service is reachable.",
        file=sys.stderr,
    )
    return 1 if strict else 0


if __name__ == "__main__":
    sys.exit(main())
