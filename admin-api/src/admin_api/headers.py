"""Security headers on every response of the admin API and its page.

- ``Content-Security-Policy: default-src 'self'; frame-ancestors 'none'``: the page, its
  script and style come from this app only, and no other site may frame it (clickjacking).
  The Swagger UI page (``/api/docs``, APIFlask's template) carries one inline ``<script>``
  and one inline ``<style>``: for HTML that has inline blocks, the policy adds the SHA-256 of
  exactly those blocks to ``script-src`` / ``style-src`` (CSP Level 2 hashes; nothing else
  inline runs), and ``img-src data:`` for the icons that swagger-ui.css embeds.
- ``X-Content-Type-Options: nosniff``: JSON stays JSON, never run as script.
- ``Referrer-Policy: no-referrer``: URLs of the lab leave nothing behind in other sites' logs.
"""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, Response

BASE_POLICY = "default-src 'self'; frame-ancestors 'none'"
_INLINE = re.compile(r"<(script|style)(?![^>]*\bsrc=)[^>]*>(.*?)</\1>", re.S | re.I)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def policy_for(html: str | None) -> str:
    """The policy for a response: the base one, plus hashes of inline blocks of an HTML page."""
    if not html:
        return BASE_POLICY
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for tag, body in _INLINE.findall(html):
        hashes[tag.lower()].append(_sha256(body))
    if not hashes["script"] and not hashes["style"]:
        return BASE_POLICY
    parts = [BASE_POLICY]
    if hashes["script"]:
        parts.append("script-src 'self' " + " ".join(hashes["script"]))
    if hashes["style"]:
        parts.append("style-src 'self' " + " ".join(hashes["style"]))
    parts.append("img-src 'self' data:")
    return "; ".join(parts)


def init_app(app: Flask) -> None:
    @app.after_request
    def security_headers(resp: Response) -> Response:
        html = None
        if resp.mimetype == "text/html" and not resp.direct_passthrough and not resp.is_streamed:
            html = resp.get_data(as_text=True)
        resp.headers["Content-Security-Policy"] = policy_for(html)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp
