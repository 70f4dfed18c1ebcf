"""Structured logging: one JSON object per line, with task_id and trace_id whenever a task is in scope."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

import msgspec

__all__ = ["bind_task", "setup_logging", "task_scope"]

_task_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("sluice_task_id", default=None)
_encoder = msgspec.json.Encoder()
# Attributes every LogRecord has, plus uvicorn's terminal-colour copy of the message: none are extra fields.
_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}


def bind_task(task_id: str | None) -> contextvars.Token[str | None]:
    return _task_id.set(task_id)


class task_scope:
    """`with task_scope(task_id): ...` — every log line inside carries the task id."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self._token: contextvars.Token[str | None] | None = None

    def __enter__(self) -> None:
        self._token = _task_id.set(self.task_id)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _task_id.reset(self._token)


def _trace_id() -> str | None:
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        task_id = getattr(record, "task_id", None) or _task_id.get()
        if task_id:
            out["task_id"] = task_id
        trace_id = _trace_id()
        if trace_id:
            out["trace_id"] = trace_id
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and key not in out and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(out).decode() if _safe(out) else repr(out)


def _safe(out: dict[str, Any]) -> bool:
    try:
        _encoder.encode(out)
        return True
    except (TypeError, msgspec.EncodeError):
        for key, value in list(out.items()):
            out[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        task_id = getattr(record, "task_id", None) or _task_id.get()
        return f"{line} task_id={task_id}" if task_id else line


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx", "httpcore", "openai._base_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
