"""The admin area: users, their roles, their activation and their sessions.

Every view is guarded by ``@roles_required("admin")``: a visitor is sent to the login
page (the 401 handler), a signed-in user without the role gets 403.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from flask_sessionstore import (
    PasswordError,
    UnknownRoleError,
    UserExistsError,
    logout_user,
    roles_required,
)

from .account import current_session_key
from .auth import check_new_password, valid_email
from .web import get_backend

__all__ = ["bp"]

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _user_or_404(user_id: str) -> Any:
    user = get_backend().datastore.get_user(user_id)
    if user is None:
        abort(404)
    return user


def _is_me(user: Any) -> bool:
    datastore = get_backend().datastore
    return bool(datastore.user_pk(user) == datastore.user_pk(current_user))


def _to_user(user: Any) -> Response:
    return redirect(url_for("admin.user", user_id=get_backend().datastore.user_pk(user)))


@bp.get("/")
@roles_required("admin")
def users() -> str:
    """List every user and every role."""
    backend = get_backend()
    return render_template(
        "admin/users.html", users=backend.users(), roles=backend.roles(),
        role_names=backend.role_names, pk=backend.datastore.user_pk,
    )


@bp.route("/users/new", methods=["GET", "POST"])
@roles_required("admin")
def new_user() -> Response | str | tuple[str, int]:
    """Create a user with a password and any roles."""
    backend = get_backend()
    email = request.form.get("email", "").strip().lower()
    chosen = request.form.getlist("roles")
    if request.method == "POST":
        password = request.form.get("password", "")
        problem = None if valid_email(email) else "Enter a valid email address."
        problem = problem or check_new_password(password, password)
        if problem is None:
            try:
                user = backend.datastore.create_user(email=email, password=password, roles=chosen)
            except (UserExistsError, UnknownRoleError, PasswordError) as exc:
                problem = str(exc)
            else:
                flash(f"Created {user.email}.", "success")
                return _to_user(user)
        flash(problem, "error")
        status = 400
    else:
        status = 200
    return render_template(
        "admin/new_user.html", email=email, chosen=chosen, roles=backend.roles()
    ), status


@bp.get("/users/<user_id>")
@roles_required("admin")
def user(user_id: str) -> str:
    """One user: their roles, activation and live sessions."""
    backend = get_backend()
    found = _user_or_404(user_id)
    held = backend.role_names(found)
    return render_template(
        "admin/user.html", user=found, user_id=backend.datastore.user_pk(found), held=held,
        grantable=[role for role in backend.roles() if role.name not in held],
        records=backend.datastore.list_sessions(found), current_key=current_session_key(),
        is_me=_is_me(found),
    )


@bp.post("/users/<user_id>/roles")
@roles_required("admin")
def edit_roles(user_id: str) -> Response:
    """Grant (``action=grant``) or take (``action=take``) the role named ``role``."""
    datastore = get_backend().datastore
    found = _user_or_404(user_id)
    role, action = request.form.get("role", ""), request.form.get("action")
    if action not in ("grant", "take"):
        abort(400)
    if action == "take" and role == "admin" and _is_me(found):
        flash("You cannot take your own admin role: ask another admin.", "error")
        return _to_user(found)
    try:
        if action == "grant":
            changed = datastore.add_role_to_user(found, role)
        else:
            changed = datastore.remove_role_from_user(found, role)
    except UnknownRoleError:
        abort(400)
    if changed:
        verb = "Granted" if action == "grant" else "Took"
        flash(f"{verb} the role {role} {'to' if action == 'grant' else 'from'} {found.email}.",
              "success")
    return _to_user(found)


@bp.post("/users/<user_id>/active")
@roles_required("admin")
def set_active(user_id: str) -> Response:
    """Activate (``action=activate``) or deactivate, which ends all their sessions."""
    datastore = get_backend().datastore
    found = _user_or_404(user_id)
    action = request.form.get("action")
    if action == "deactivate":
        if _is_me(found):
            flash("You cannot deactivate your own account.", "error")
        elif datastore.deactivate_user(found):
            flash(f"Deactivated {found.email} and ended their sessions.", "success")
    elif action == "activate":
        if datastore.activate_user(found):
            flash(f"Activated {found.email}.", "success")
    else:
        abort(400)
    return _to_user(found)


@bp.post("/users/<user_id>/sessions/end")
@roles_required("admin")
def end_session(user_id: str) -> Response:
    """End one session of the user."""
    datastore = get_backend().datastore
    found = _user_or_404(user_id)
    key = request.form.get("key", "")
    if key not in {record.key for record in datastore.list_sessions(found)}:
        abort(404)
    if key == current_session_key():
        logout_user()
        flash("That was your own session: you are logged out.", "info")
        return redirect(url_for("auth.login"))
    datastore.revoke_session(key)
    flash(f"Ended one session of {found.email}.", "success")
    return _to_user(found)


@bp.post("/users/<user_id>/sessions/end-all")
@roles_required("admin")
def end_all_sessions(user_id: str) -> Response:
    """End every session of the user (for yourself: every one but this)."""
    datastore = get_backend().datastore
    found = _user_or_404(user_id)
    count = datastore.revoke_user_sessions(found, keep_current=_is_me(found))
    flash(f"Ended {count} session(s) of {found.email}.", "success")
    return _to_user(found)
