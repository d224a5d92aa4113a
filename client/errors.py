"""The one error type clients raise."""
from __future__ import annotations

import grpc


class ServiceError(RuntimeError):
    """A call to a worldenv service failed; `code` is the gRPC status code."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN, method: str = ""):
        super().__init__(f"{method}: {code.name}: {message}" if method else f"{code.name}: {message}")
        self.code, self.details, self.method = code, message, method
