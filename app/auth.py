"""Bearer-token checks for the admin endpoints and (optionally) the data endpoints.

Tokens are compared with ``hmac.compare_digest`` so the comparison time does not reveal how much
of a guess was right. 401 means "no credentials" (with the WWW-Authenticate challenge), 403 means
"credentials, but wrong": clients can tell a missing header from a bad token.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from pydantic import SecretStr

from app.errors import ApiError

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def require_admin(request: Request) -> None:
    settings = request.app.state.services.settings
    if settings.admin_token is None:
        raise ApiError(
            503,
            "admin_disabled",
            "admin endpoints are disabled: set TSSYNTH_ADMIN_TOKEN on the server to enable them",
        )
    _check_bearer(request, settings.admin_token, "admin token")


async def require_api_token(request: Request) -> None:
    settings = request.app.state.services.settings
    if settings.api_token is not None:
        _check_bearer(request, settings.api_token, "API token")


def _check_bearer(request: Request, expected: SecretStr, what: str) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", f"this endpoint needs 'Authorization: Bearer <{what}>'", headers=_CHALLENGE)
    if not hmac.compare_digest(token.strip().encode(), expected.get_secret_value().encode()):
        raise ApiError(403, "forbidden", f"the {what} is not valid")
