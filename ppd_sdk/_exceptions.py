"""The one exception hierarchy of ``ppd_sdk``. Every error a session raises is a
:class:`PPDError`; errors from the ``openai`` client are mapped here (the original is kept
as ``__cause__``)::

    PPDError
    ├── APIError                    the server answered with an error (status_code, body, request_id)
    │   ├── BadRequestError             400 (e.g. invalid SLO hints: ``param`` names the field)
    │   ├── AuthenticationError         401
    │   ├── PermissionDeniedError       403
    │   ├── NotFoundError               404 (e.g. unknown model)
    │   ├── ConflictError               409
    │   ├── UnprocessableEntityError    422
    │   ├── RateLimitError              429  (transient: retried once before any token)
    │   └── InternalServerError         >= 500 (502/503/504 transient: retried once)
    └── APIConnectionError          no answer: connection refused/reset   (transient)
        └── APITimeoutError         the configured timeout expired         (transient)

Usage::

    try:
        reply = session.send("hi")
    except ppd_sdk.BadRequestError as e:
        print(e.status_code, e.param, e.message)
"""

from __future__ import annotations

from typing import Any

import openai

#: Statuses that mean "try again": overload, gateway trouble, rate limiting.
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})


class PPDError(Exception):
    """Base class of every error raised by ``ppd_sdk``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIError(PPDError):
    """The server answered with an error. ``status_code`` is None for an error event
    that arrived inside a stream (after the HTTP status was already 200)."""

    status_code: int | None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        body: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.request_id = request_id
        err = body.get("error", body) if isinstance(body, dict) else None
        self.param: str | None = err.get("param") if isinstance(err, dict) else None
        self.code: str | None = err.get("code") if isinstance(err, dict) else None
        self.retry_after_s: float | None = None  # from a Retry-After header, when the server sent one


class BadRequestError(APIError):
    """HTTP 400."""


class AuthenticationError(APIError):
    """HTTP 401."""


class PermissionDeniedError(APIError):
    """HTTP 403."""


class NotFoundError(APIError):
    """HTTP 404."""


class ConflictError(APIError):
    """HTTP 409."""


class UnprocessableEntityError(APIError):
    """HTTP 422."""


class RateLimitError(APIError):
    """HTTP 429."""


class InternalServerError(APIError):
    """HTTP >= 500."""


class APIConnectionError(PPDError):
    """The request got no answer (refused, reset, DNS, ...)."""


class APITimeoutError(APIConnectionError):
    """The request timed out (see the ``timeout`` argument of sessions and turns)."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_for_status(status_code: int | None) -> type[APIError]:
    """The :class:`APIError` subclass for an HTTP status."""
    if status_code is None:
        return APIError
    if status_code >= 500:
        return InternalServerError
    return _BY_STATUS.get(status_code, APIError)


def from_openai(exc: BaseException) -> PPDError:
    """Map an ``openai`` exception (or any other) onto this hierarchy."""
    if isinstance(exc, PPDError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return APITimeoutError(str(exc) or "request timed out")
    if isinstance(exc, openai.APIConnectionError):
        return APIConnectionError(str(exc) or "connection error")
    if isinstance(exc, openai.APIStatusError):
        cls = error_for_status(exc.status_code)
        err = cls(exc.message, status_code=exc.status_code, body=exc.body, request_id=exc.request_id)
        err.retry_after_s = _retry_after(exc.response.headers.get("retry-after"))
        return err
    if isinstance(exc, openai.APIError):
        return APIError(exc.message, body=exc.body)
    return PPDError(f"{type(exc).__name__}: {exc}")


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:  # an HTTP date: not worth parsing for a single retry
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def retry_delay(exc: PPDError, backoff_s: float, cap_s: float = 5.0) -> float:
    """Seconds to wait before the one retry: the server's Retry-After (capped), else ``backoff_s``."""
    after = getattr(exc, "retry_after_s", None)
    return min(after, cap_s) if after is not None else backoff_s


def is_transient(exc: PPDError) -> bool:
    """True when a turn that failed before any token arrived may be retried once."""
    if isinstance(exc, APIConnectionError):
        return True
    if isinstance(exc, APIError) and exc.status_code is None:
        # An error event inside a stream: the PPD router marks a worker failure ``retryable``.
        err = exc.body.get("error", exc.body) if isinstance(exc.body, dict) else None
        return isinstance(err, dict) and err.get("retryable") is True
    return isinstance(exc, APIError) and exc.status_code in TRANSIENT_STATUS
