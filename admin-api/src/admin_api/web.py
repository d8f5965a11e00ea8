"""The "DICOM Lab" web page: one static page whose script talks to the JSON API.

The page carries no data and no secret, so it needs no token; its script
asks for the token once and keeps it in sessionStorage for the tab.
"""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("web", __name__)


@bp.get("/")
def index():
    return render_template("index.html")
