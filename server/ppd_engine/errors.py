"""Request errors and their OpenAI-style bodies ({"error": {message, type, param, code}})."""

from __future__ import annotations

from typing import Any


class InvalidRequest(ValueError):
    """The client sent something we refuse; maps to an HTTP 4xx (400 by default)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code or ("invalid_request_error" if status == 400 else str(status))


def error_body(message: str, status: int = 400, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code or kind}}
