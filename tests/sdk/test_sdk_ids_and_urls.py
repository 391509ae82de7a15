"""Conversation ids are UUIDv7; base URLs get ``/v1`` only when they are a server root."""

from __future__ import annotations

import uuid

import pytest

from ppd_sdk import new_conversation_id
from ppd_sdk import resolve_base_url


def test_conversation_ids_are_uuid7_and_time_ordered() -> None:
    ids = [new_conversation_id() for _ in range(50)]
    assert len(set(ids)) == 50
    parsed = [uuid.UUID(i) for i in ids]
    assert {u.version for u in parsed} == {7} and {u.variant for u in parsed} == {uuid.RFC_4122}
    assert [u.int >> 80 for u in parsed] == sorted(u.int >> 80 for u in parsed)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:30000", "http://127.0.0.1:30000/v1"),
        ("http://127.0.0.1:30000/", "http://127.0.0.1:30000/v1"),
        ("http://h:1/v1", "http://h:1/v1"),
        ("https://api.example.com/openai/v1/", "https://api.example.com/openai/v1"),
    ],
)
def test_base_url(given: str, expected: str) -> None:
    assert resolve_base_url(given) == expected


def test_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPD_BASE_URL", "http://10.0.0.1:9")
    assert resolve_base_url(None) == "http://10.0.0.1:9/v1"
    monkeypatch.delenv("PPD_BASE_URL")
    assert resolve_base_url(None) == "http://127.0.0.1:30000/v1"
