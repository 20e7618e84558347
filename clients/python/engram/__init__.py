"""Engram's Python client.

>>> from engram import Engram
>>> db = Engram("http://127.0.0.1:3333")
>>> db.remember("Caroline is allergic to peanuts", namespace="agent-7", importance=0.9)
>>> db.recall("food allergies", namespace="agent-7").hits[0].memory.content
'Caroline is allergic to peanuts'
"""

from ._client import UNSET, AsyncEngram, Engram, RetryPolicy
from ._errors import (
    AuthenticationError,
    ConflictError,
    ConnectionError,
    EngramError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StorageFullError,
    TimeoutError,
    UnavailableError,
    ValidationError,
)
from ._types import Deleted, Health, Memory, Migration, Namespace, OwnVectors, SearchHit, SearchResults, Snapshot, SpaceHit, Version

__version__ = "0.1.0"

__all__ = [
    "AsyncEngram",
    "AuthenticationError",
    "ConflictError",
    "ConnectionError",
    "Deleted",
    "Engram",
    "EngramError",
    "Health",
    "Memory",
    "Migration",
    "Namespace",
    "NotFoundError",
    "OwnVectors",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "SearchHit",
    "SearchResults",
    "ServerError",
    "Snapshot",
    "SpaceHit",
    "StorageFullError",
    "TimeoutError",
    "UNSET",
    "UnavailableError",
    "ValidationError",
    "Version",
]
