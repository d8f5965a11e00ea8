"""The bearer token: ``Authorization: Bearer <ADMIN_TOKEN>``, compared in constant time."""

from __future__ import annotations

import hmac

from apiflask import HTTPTokenAuth
from flask import current_app

auth = HTTPTokenAuth(
    scheme="Bearer",
    description="The ADMIN_TOKEN of the lab (make up prints it).",
)


@auth.verify_token
def verify_token(token: str | None) -> str | None:
    expected = current_app.config["ADMIN_TOKEN"]
    if not token or not expected:
        return None
    if hmac.compare_digest(token.encode("utf-8"), str(expected).encode("utf-8")):
        return "admin"
    return None
