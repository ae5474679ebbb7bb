"""The token gate: bearer header or cookie passes, ``?token=`` sets the cookie and drops itself from the
address, anything else is 401; without a token only a loopback address may be bound."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from configs.dashboard import is_loopback
from configs.settings import load_settings
from bse_predict.dashboard.access import COOKIE, TokenGate
from bse_predict.dashboard.run import check_binding


def client() -> TestClient:
    app = Starlette(routes=[Route("/page", lambda request: PlainTextResponse(f"ok {request.url.query}"))])
    return TestClient(TokenGate(app, SecretStr("s3cret")), follow_redirects=False)


def test_without_the_token_every_request_is_refused() -> None:
    web = client()
    assert web.get("/page").status_code == 401
    assert web.get("/page", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert web.get("/page?token=nope").status_code == 401
    web.cookies.set(COOKIE, "nope")
    assert web.get("/page").status_code == 401


def test_the_token_in_a_header_a_query_then_a_cookie() -> None:
    web = client()
    assert web.get("/page", headers={"Authorization": "Bearer s3cret"}).text == "ok "
    redirect = web.get("/page?target=2%25&token=s3cret")
    assert redirect.status_code == 303 and redirect.headers["location"] == "/page?target=2%25"
    assert "httponly" in redirect.headers["set-cookie"].lower()
    assert web.get("/page?target=2%25").text == "ok target=2%25"  # the cookie from the redirect


def test_binding_beyond_this_host_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    monkeypatch.delenv("BSE_DASHBOARD_TOKEN", raising=False)
    check_binding(load_settings(), "127.0.0.1")
    with pytest.raises(ValueError, match="BSE_DASHBOARD_TOKEN"):
        check_binding(load_settings(), "0.0.0.0")
    monkeypatch.setenv("BSE_DASHBOARD_TOKEN", "t0ken")
    settings = load_settings()
    check_binding(settings, "0.0.0.0")
    assert "t0ken" not in repr(settings) and "t0ken" not in str(settings.dashboard)
