"""The server's errors; only the API layer turns them into HTTP responses."""

from __future__ import annotations


class ServerError(Exception):
    status_code = 500


class NotFound(ServerError):
    status_code = 404


class Conflict(ServerError):
    status_code = 409


class Invalid(ServerError):
    status_code = 422
