"""The public surface is exactly ``ppd_sdk.__all__``, sorted (like httpx's test)."""

from __future__ import annotations

import subprocess
import sys
import types

import ppd_sdk


def test_all_is_sorted_and_matches_public_names() -> None:
    public = {
        name
        for name, value in vars(ppd_sdk).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    } | {"__version__"}
    assert ppd_sdk.__all__ == sorted(ppd_sdk.__all__)
    assert set(ppd_sdk.__all__) == public


def test_import_stays_light() -> None:
    code = (
        "import sys, ppd_sdk; print(sorted(m for m in ('torch', 'ppd_server', 'langchain_core') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_py_typed_marker_ships() -> None:
    from importlib.resources import files

    assert files("ppd_sdk").joinpath("py.typed").is_file()
