"""Registering, logging in and logging out."""

from __future__ import annotations

import re

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import LoginManager, current_user
from werkzeug.wrappers import Response

from flask_sessionstore import (
    ConstraintError,
    PasswordError,
    UserExistsError,
    login_user,
    logout_user,
)

from .web import get_backend, safe_next

__all__ = ["bp", "check_new_password", "make_login_manager", "unauthorized", "valid_email"]

bp = Blueprint("auth", __name__)

#: NIST SP 800-63B asks for at least 8 characters and no composition rules.
MIN_PASSWORD_LENGTH = 8
# No white space and no control character (NUL, DEL...) anywhere.
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")


def make_login_manager() -> LoginManager:
    """Return the app's Flask-Login manager, sending anonymous visitors to the login page."""
    manager = LoginManager()
    manager.unauthorized_handler(unauthorized)
    return manager


def unauthorized() -> Response:
    """Send the visitor to the login page, to come back here afterwards."""
    flash("Please log in to see that page.", "info")
    target = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(url_for("auth.login", next=target))


def valid_email(email: str) -> bool:
    """Return whether ``email`` looks like an address (the real check is a mail sent)."""
    return len(email) <= 255 and _EMAIL.fullmatch(email) is not None


def check_new_password(password: str, confirm: str) -> str | None:
    """Return what is wrong with a new password and its confirmation, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Choose a password of at least {MIN_PASSWORD_LENGTH} characters."
    if password != confirm:
        return "The two passwords differ."
    return None


@bp.route("/register", methods=["GET", "POST"])
def register() -> Response | str | tuple[str, int]:
    """Create an account (with no role) and send the new user to the login page."""
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    email = request.form.get("email", "").strip().lower()
    if request.method == "POST":
        password = request.form.get("password", "")
        problem = None if valid_email(email) else "Enter a valid email address."
        problem = problem or check_new_password(password, request.form.get("confirm", ""))
        if problem is None:
            try:
                get_backend().datastore.create_user(email=email, password=password)
            except UserExistsError:
                problem = "An account with that email already exists."
            except PasswordError as exc:
                problem = str(exc)
            except ConstraintError:
                # A value the database cannot hold (valid_email lets few through).
                problem = "Enter a valid email address."
        if problem is None:
            flash("Your account is ready. Log in to continue.", "success")
            return redirect(url_for("auth.login", email=email))
        flash(problem, "error")
        return render_template("auth/register.html", email=email), 400
    return render_template("auth/register.html", email=email)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    """Check the email and password and start a session (a lasting one with "remember")."""
    next_url = safe_next(request.values.get("next"))
    if current_user.is_authenticated and request.method == "GET":
        return redirect(next_url or url_for("main.index"))
    email = request.values.get("email", "").strip()
    if request.method == "POST":
        user = get_backend().datastore.authenticate(email, request.form.get("password", ""))
        if user is not None:
            login_user(user, remember=request.form.get("remember") == "on")
            flash(f"Welcome, {user.email}.", "success")
            return redirect(next_url or url_for("main.index"))
        # One message for every failure: an unknown email, a wrong password and a
        # deactivated account look the same from outside.
        flash("Wrong email or password, or the account is deactivated.", "error")
        return _login_page(email, next_url), 401
    return _login_page(email, next_url)


def _login_page(email: str, next_url: str | None) -> str:
    return render_template(
        "auth/login.html", email=email, next=next_url,
        remember_days=current_app.permanent_session_lifetime.days,
    )


@bp.post("/logout")
def logout() -> Response:
    """End this session: its row is deleted and the cookie cleared."""
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("main.index"))
