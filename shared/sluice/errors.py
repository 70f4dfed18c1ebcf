"""The one error hierarchy of Sluice.

    SluiceError                 code + message, safe to show a client
    ├── InvalidInput            bad input from outside (HTTP 400/422)
    ├── NotFound                unknown task (404)
    ├── Conflict                the task's state forbids this (409)
    ├── Unavailable             NATS or a dependency is down, retry later (503)
    │   └── PermissionDenied    NATS refused this identity a subject: a deployment mistake, said once, not retried
    ├── ProvisioningError       a stream or bucket exists with settings we cannot reconcile
    └── ModelError              the model call failed for good (carries the task.failed code)

Third-party exceptions (nats, openai) are translated into these in exactly one place per adapter.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "InvalidInput",
    "ModelError",
    "NotFound",
    "PermissionDenied",
    "ProvisioningError",
    "SluiceError",
    "Unavailable",
]


class SluiceError(Exception):
    code: str = "internal"

    def __init__(self, code: str | None = None, message: str = "") -> None:
        self.code = code or self.code
        self.message = message or self.code
        super().__init__(f"{self.code}: {self.message}")


class InvalidInput(SluiceError):
    code = "invalid_input"


class NotFound(SluiceError):
    code = "not_found"


class Conflict(SluiceError):
    code = "conflict"


class Unavailable(SluiceError):
    code = "unavailable"

    def __init__(self, code: str | None = None, message: str = "", retry_after_s: int = 2) -> None:
        super().__init__(code, message)
        self.retry_after_s = retry_after_s


class PermissionDenied(Unavailable):
    code = "nats_permission_denied"


class ProvisioningError(SluiceError):
    code = "provisioning"


class ModelError(SluiceError):
    code = "model_error"
