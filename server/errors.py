"""The server's errors; only the API layer turns them into HTTP responses.

Each carries what people are told: English (`detail`) and, where the admin
page shows it, Chinese (`detail_zh`, mamaroom/said.py)."""

from __future__ import annotations

from mamaroom.said import Said


class ServerError(Exception):
    status_code = 500

    def __init__(self, message: str | Said | list[Said]) -> None:
        if isinstance(message, list):
            self.detail: str | list[str] = [m.en for m in message]
            self.detail_zh: str | list[str] | None = [m.zh for m in message]
        elif isinstance(message, Said):
            self.detail, self.detail_zh = message.en, message.zh
        else:
            self.detail, self.detail_zh = message, None
        super().__init__(self.detail if isinstance(self.detail, str) else "; ".join(self.detail))


class NotFound(ServerError):
    status_code = 404


class Conflict(ServerError):
    status_code = 409


class Invalid(ServerError):
    status_code = 422


class TooLarge(ServerError):
    status_code = 413
