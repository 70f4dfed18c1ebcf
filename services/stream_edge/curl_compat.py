"""`curl -d '{"input": "hi"}'` sends `Content-Type: application/x-www-form-urlencoded`; Sluice reads it as JSON.

The API takes JSON only, and curl's default for `-d` is the form type, so the one-line curl every tutorial (and
our README) shows would otherwise get a 415. A form-typed body on `/v1/` is read as JSON: a real form body
(`input=hi`) then gets the same clear "body is not valid JSON" 400 as any other malformed body. Other content
types still get 415.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["FormBodyAsJsonMiddleware"]

_FORM = b"application/x-www-form-urlencoded"


class FormBodyAsJsonMiddleware:
    def __init__(self, app: ASGIApp, prefix: str = "/v1/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith(self.prefix):
            headers = scope["headers"]
            if any(k == b"content-type" and v.split(b";")[0].strip().lower() == _FORM for k, v in headers):
                scope = dict(scope)
                scope["headers"] = [(k, b"application/json") if k == b"content-type" else (k, v) for k, v in headers]
        await self.app(scope, receive, send)
