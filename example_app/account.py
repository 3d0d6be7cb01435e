"""A user's own account: profile, password, and the sessions they have open."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from flask_sessionstore import PasswordError, logout_user

from .auth import check_new_password
from .web import get_backend, login_required

__all__ = ["bp", "current_session_key"]

bp = Blueprint("account", __name__, url_prefix="/account")


def current_session_key() -> str | None:
    """Return the stored key of this request's session (the hash of its id)."""
    key: str | None = getattr(session, "key", None)
    return key


def _me() -> Any:
    # The real user object, not Flask-Login's proxy: the datastore stores it.
    return current_user._get_current_object()


@bp.route("", methods=["GET", "POST"])
@login_required
def profile() -> Response | str | tuple[str, int]:
    """Show the account; change the password (which ends every other session)."""
    backend = get_backend()
    if request.method == "POST":
        new_password = request.form.get("new_password", "")
        problem = check_new_password(new_password, request.form.get("confirm", ""))
        if problem is None:
            before = len(backend.datastore.list_sessions(_me()))
            try:
                backend.datastore.change_password(
                    _me(), request.form.get("current_password", ""), new_password
                )
            except PasswordError as exc:
                problem = str(exc)
            else:
                ended = before - 1
                flash(
                    "Your password is changed."
                    + (f" Your {ended} other session(s) were ended." if ended > 0 else ""),
                    "success",
                )
                return redirect(url_for("account.profile"))
        flash(problem, "error")
        return render_template("account/profile.html", roles=backend.role_names(_me())), 400
    return render_template("account/profile.html", roles=backend.role_names(_me()))


@bp.get("/sessions")
@login_required
def sessions() -> str:
    """List this user's live sessions, the current one marked."""
    records = get_backend().datastore.list_sessions(_me())
    return render_template(
        "account/sessions.html", records=records, current_key=current_session_key()
    )


@bp.post("/sessions/end")
@login_required
def end_session() -> Response:
    """End one of this user's sessions; ending the current one logs out."""
    key = request.form.get("key", "")
    datastore = get_backend().datastore
    # Only a key among this user's own sessions may be ended here.
    if key not in {record.key for record in datastore.list_sessions(_me())}:
        abort(404)
    if key == current_session_key():
        logout_user()
        flash("This session is ended: you are logged out.", "info")
        return redirect(url_for("auth.login"))
    datastore.revoke_session(key)
    flash("That session is ended: its next request will find itself logged out.", "success")
    return redirect(url_for("account.sessions"))


@bp.post("/sessions/end-others")
@login_required
def end_other_sessions() -> Response:
    """End every session of this user but the current one."""
    count = get_backend().datastore.revoke_user_sessions(_me(), keep_current=True)
    flash(f"Ended {count} other session(s).", "success")
    return redirect(url_for("account.sessions"))
