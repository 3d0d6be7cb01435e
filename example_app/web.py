"""What every page shares: the backend accessor, error pages, and template filters."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import flask_login
from flask import Flask, current_app, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from flask_sessionstore.datastore import utcnow

from .orms import ExampleBackend

__all__ = ["describe_device", "get_backend", "init_web", "login_required", "safe_next"]

F = TypeVar("F", bound=Callable[..., Any])

_TITLES = {
    400: "Bad request",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
}


def get_backend() -> ExampleBackend:
    """Return the current app's backend (its datastore is ``.datastore``)."""
    backend: ExampleBackend = current_app.extensions["example_backend"]
    return backend


def login_required(view: F) -> F:
    """:func:`flask_login.login_required`, with its type kept (Flask-Login is untyped)."""
    return cast(F, flask_login.login_required(view))


def safe_next(target: str | None) -> str | None:
    """Return ``target`` if it is a path on this site, else None (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """Return ``moment`` (naive UTC) as "just now", "5 minutes ago", "2 days ago"."""
    if moment is None:
        return "never"
    seconds = int(((now or utcnow()) - moment).total_seconds())
    if seconds < 0:
        return "in the future"
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def until(moment: datetime | None, now: datetime | None = None) -> str:
    """Return a future ``moment`` (naive UTC) as "in 59 minutes", "in 30 days"."""
    if moment is None:
        return "never"
    seconds = int((moment - (now or utcnow())).total_seconds())
    if seconds <= 0:
        return "now"
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = seconds // size
            return f"in {count} {unit}{'s' if count != 1 else ''}"
    return "in under a minute"


def utc(moment: datetime | None) -> str:
    """Return ``moment`` (naive UTC) as ``2030-01-01 12:00 UTC``."""
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"


_BROWSERS = (
    ("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"),
    ("HeadlessChrome/", "Headless Chrome"), ("Chromium/", "Chromium"), ("Chrome/", "Chrome"),
    ("Safari/", "Safari"), ("curl/", "curl"), ("python-requests/", "Python requests"),
    ("Python-urllib/", "Python urllib"), ("Werkzeug/", "Werkzeug test client"),
)
_SYSTEMS = (
    ("Android", "Android"), ("iPhone", "iPhone"), ("iPad", "iPad"), ("Windows", "Windows"),
    ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"), ("Linux", "Linux"),
)


def describe_device(user_agent: str | None) -> str:
    """Return a short human name for a user agent: "Firefox on Linux"."""
    if not user_agent:
        return "Unknown device"
    browser = next((name for token, name in _BROWSERS if token in user_agent), None)
    system = next((name for token, name in _SYSTEMS if token in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    if browser or system:
        return str(browser or system)
    return re.split(r"[\s/]", user_agent, maxsplit=1)[0][:40] or "Unknown device"


def _error_page(error: HTTPException) -> Response | HTTPException | tuple[str, int]:
    if error.response is not None:
        # The library already answered (JSON for clients that asked for it).
        return error
    code = error.code or 500
    if code == 401:
        from .auth import unauthorized

        return unauthorized()
    csrf = code == 400 and error.description == "csrf"
    return render_template(
        "error.html", code=code, title=_TITLES.get(code, error.name), csrf=csrf,
        message=None if csrf else error.description,
    ), code


def init_web(app: Flask) -> None:
    """Register the error pages and the template filters on ``app``."""
    for code in (400, 401, 403, 404, 405):
        app.register_error_handler(code, _error_page)
    app.jinja_env.filters.update(ago=ago, until=until, utc=utc, device=describe_device)

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"request_path": request.path}
