"""The token check in front of every page: ``Authorization: Bearer TOKEN``, or ``?token=TOKEN`` once,
which sets a cookie and redirects to the same address without it (so the token leaves the address bar
and the browser's history). Anything else gets 401."""

from __future__ import annotations

import hmac
from urllib.parse import urlencode

from pydantic import SecretStr
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["TokenGate", "COOKIE"]

COOKIE = "bse_dashboard_token"


class TokenGate:
    def __init__(self, app: ASGIApp, token: SecretStr) -> None:
        self._app = app
        self._token = token.get_secret_value().encode()

    def _valid(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        scheme, _, bearer = connection.headers.get("authorization", "").partition(" ")
        if (scheme.lower() == "bearer" and self._valid(bearer)) or self._valid(connection.cookies.get(COOKIE)):
            await self._app(scope, receive, send)
            return
        if self._valid(connection.query_params.get("token")):
            kept = [(k, v) for k, v in connection.query_params.multi_items() if k != "token"]
            response = RedirectResponse(connection.url.path + (f"?{urlencode(kept)}" if kept else ""),
                                        status_code=303)
            response.set_cookie(COOKIE, self._token.decode(), httponly=True, samesite="strict",
                                secure=connection.url.scheme == "https")
            await response(scope, receive, send)
            return
        await PlainTextResponse("401: a token is required (Authorization: Bearer, or ?token=)", status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
