"""Errors raised by the serving clients."""

from __future__ import annotations


class ServerError(Exception):
    """The server answered with an HTTP error status.

    ``status_code`` is the HTTP status (404 unknown model, 400 bad shape or dtype, 503 not ready
    or queue full, ...); ``message`` is the server's error text from its ``{"error": ...}`` body.
    """

    def __init__(self, status_code: int, message: str):
        super().__init__(status_code, message)
        self.status_code = int(status_code)
        self.message = message

    def __str__(self) -> str:
        return f"HTTP {self.status_code}: {self.message}"
