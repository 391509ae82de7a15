"""The README's quick start is real code: its ``ppd_sdk`` block runs as written against the
in-process fake router and prints each turn's route and cached tokens."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeOpenAI

import ppd_sdk

README = Path(__file__).resolve().parents[2] / "README.md"


def _quick_start() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    return next(b for b in blocks if "from ppd_sdk import ChatSession" in b)


def test_readme_quick_start_runs_and_prints_the_routes(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = ppd_sdk.ChatSession

    def session_on_the_fake(**kwargs: Any) -> ppd_sdk.ChatSession:
        kwargs.pop("base_url")
        return real(client=fake.client(), **kwargs)

    monkeypatch.setattr(ppd_sdk, "ChatSession", session_on_the_fake)
    exec(compile(_quick_start(), str(README), "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[-2] for line in lines] == ["pd", "local"], lines
    assert [line.split()[-1].isdigit() for line in lines] == [True, True], lines  # cached tokens
    assert fake.requests[-1].headers["x-slo-ttft-ms"] == "500"
    assert fake.bodies[-1]["ppd"] == {"weights": {"ttft": 2.0, "tpot": 1.0}}
