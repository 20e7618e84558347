"""Errors: one class per kind of failure, each carrying what the daemon said."""

from __future__ import annotations

from typing import Any, Optional


class EngramError(Exception):
    """A request Engram refused or could not serve.

    ``code`` is the daemon's error code (``INVALID_REQUEST``, ``MEMORY_NOT_FOUND``, …),
    ``field`` the request field it names (when it names one), ``request_id`` the id to quote
    when reading the daemon's log, ``status`` the HTTP status (``None`` when no answer came).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        status: Optional[int] = None,
        field: Optional[str] = None,
        request_id: Optional[str] = None,
        details: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.field = field
        self.request_id = request_id
        self.details = details or {}

    def __str__(self) -> str:
        where = f" [{self.code}]" if self.code else ""
        rid = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.message}{where}{rid}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r}, status={self.status!r})"


class ValidationError(EngramError):
    """400: a field is missing, malformed or out of range (``field`` names it)."""


class AuthenticationError(EngramError):
    """401: no API key, or not a valid one."""


class PermissionDeniedError(EngramError):
    """403: the API key may not touch that namespace, or is not an admin key."""


class NotFoundError(EngramError):
    """404: no such memory (or purged), snapshot or route."""


class ConflictError(EngramError):
    """409: the same content already exists in the namespace (``existing_id``)."""

    @property
    def existing_id(self) -> Optional[str]:
        return self.details.get("existing_id")


class PayloadTooLargeError(EngramError):
    """413: content, metadata or the request body is over its limit."""


class RateLimitError(EngramError):
    """429: the key's (or address's) rate limit; ``retry_after`` seconds to wait."""

    retry_after: Optional[float] = None


class UnavailableError(EngramError):
    """503: writes are stopped (after a failed fsync) or the daemon is overloaded."""


class StorageFullError(EngramError):
    """507: the disk or the working tier's heap is full."""


class ServerError(EngramError):
    """500 and other 5xx: corruption, a broken invariant or an unexpected I/O error."""


class ConnectionError(EngramError):  # noqa: A001 - the client's own transport failure
    """No answer: the daemon cannot be reached, or the connection broke mid-request."""


class TimeoutError(EngramError):  # noqa: A001
    """No answer within the client's timeout (or the daemon's own 408)."""


_BY_STATUS: dict[int, type[EngramError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: ValidationError,
    408: TimeoutError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitError,
    503: UnavailableError,
    507: StorageFullError,
}


def error_from_response(status: int, body: Any, headers: Any) -> EngramError:
    """The exception for an error answer of the daemon."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        text = body if isinstance(body, str) else repr(body)
        cls = _BY_STATUS.get(status, ServerError if status >= 500 else EngramError)
        return cls(f"HTTP {status}: {text[:200]}", status=status, request_id=headers.get("x-request-id"))
    details = err.get("details") if isinstance(err.get("details"), dict) else {}
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else EngramError)
    e = cls(
        err.get("message", f"HTTP {status}"),
        code=err.get("code", ""),
        status=status,
        field=details.get("field"),
        request_id=err.get("request_id") or headers.get("x-request-id"),
        details=details,
    )
    if isinstance(e, RateLimitError):
        try:
            e.retry_after = float(headers.get("retry-after", ""))
        except ValueError:
            e.retry_after = None
    return e


def error_from_item(item: dict[str, Any]) -> EngramError:
    """The exception for one failed item of a batch (the item's status is implied by its code)."""
    status = {
        "INVALID_REQUEST": 400,
        "FORBIDDEN": 403,
        "DUPLICATE_CONTENT": 409,
        "CONTENT_TOO_LARGE": 413,
        "INSUFFICIENT_STORAGE": 507,
        "SERVICE_UNAVAILABLE": 503,
    }.get(item.get("code", ""), 500)
    return error_from_response(status, {"error": item}, {})
