"""The one error hierarchy of Sluice.

    SluiceError                 code + message, safe to show a client
    ├── InvalidInput            bad input from outside (HTTP 400/422)
    ├── Unauthenticated         no credentials, or bad ones (401)
    ├── Forbidden               credentials fine, request refused (403: a foreign Origin or Host, another tenant)
    ├── NotFound                unknown task (404)
    ├── Conflict                the task's state forbids this (409)
    │   ├── LogMovedOn          a guarded write refused: the task's log changed since the writer last looked
    │   ├── TaskEnded           the task's log already holds its terminal event: nothing more may be written
    │   └── Superseded          a later attempt owns the task: this one may write nothing more
    ├── RateLimited             a per-tenant limit is reached, retry later (429)
    ├── Unavailable             NATS or a dependency is down, retry later (503)
    │   ├── PermissionDenied    NATS refused this identity a subject: a deployment mistake, said once, not retried
    │   └── StorageFull         a stream or bucket is at its byte limit (sluice.limits): said at once, not retried
    ├── ProvisioningError       a stream or bucket exists with settings we cannot reconcile
    └── ModelError              the model call failed for good (carries the task.failed code)

Third-party exceptions (nats, openai) are translated into these in exactly one place per adapter.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "LogMovedOn",
    "ModelError",
    "NotFound",
    "PermissionDenied",
    "ProvisioningError",
    "RateLimited",
    "SluiceError",
    "StorageFull",
    "Superseded",
    "TaskEnded",
    "Unauthenticated",
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


class Unauthenticated(SluiceError):
    code = "unauthenticated"


class Forbidden(SluiceError):
    code = "forbidden"


class RateLimited(SluiceError):
    code = "rate_limited"

    def __init__(self, code: str | None = None, message: str = "", retry_after_s: int = 1) -> None:
        super().__init__(code, message)
        self.retry_after_s = retry_after_s


class NotFound(SluiceError):
    code = "not_found"


class Conflict(SluiceError):
    code = "conflict"


class LogMovedOn(Conflict):
    code = "log_moved_on"


class TaskEnded(Conflict):
    code = "task_terminal"

    def __init__(self, code: str | None = None, message: str = "", seq: int = 0) -> None:
        super().__init__(code, message)
        self.seq = seq  # the terminal event's id


class Superseded(Conflict):
    code = "superseded"


class Unavailable(SluiceError):
    code = "unavailable"

    def __init__(self, code: str | None = None, message: str = "", retry_after_s: int = 2) -> None:
        super().__init__(code, message)
        self.retry_after_s = retry_after_s


class PermissionDenied(Unavailable):
    code = "nats_permission_denied"


class StorageFull(Unavailable):
    code = "storage_full"

    def __init__(self, code: str | None = None, message: str = "", retry_after_s: int = 30) -> None:
        super().__init__(code, message, retry_after_s)


class ProvisioningError(SluiceError):
    code = "provisioning"


class ModelError(SluiceError):
    code = "model_error"
