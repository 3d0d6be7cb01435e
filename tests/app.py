"""The app the contract suite drives: a few routes that use the library as a user would."""

from __future__ import annotations

import contextvars
from typing import Any

from flask import Flask, jsonify, request, session
from flask.testing import FlaskClient
from flask_login import current_user, login_required

from flask_sessionstore import (
    current_datastore,
    login_user,
    logout_user,
    permissions_required,
    roles_accepted,
    roles_required,
)


class IsolatedClient(FlaskClient):
    """A test client whose requests run in a fresh context, as on a real server.

    Tests hold an app context open to use the datastore directly; without this, Flask
    would reuse it for the client's requests, sharing ``g`` and the ORM session.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        return contextvars.Context().run(super().open, *args, **kwargs)


def make_app() -> Flask:
    app = Flask(__name__)
    app.test_client_class = IsolatedClient
    app.config.update(TESTING=True, SECRET_KEY="test secret key")

    @app.post("/login")
    def login() -> object:
        user = current_datastore.authenticate(request.form["email"], request.form["password"])
        if user is None:
            return "bad credentials", 401
        login_user(user, remember=request.form.get("remember") == "1")
        return "ok"

    @app.post("/logout")
    def logout() -> object:
        logout_user()
        return "bye"

    @app.get("/me")
    @login_required
    def me() -> object:
        return current_user.email

    @app.get("/admin")
    @roles_required("admin")
    def admin() -> object:
        return current_user.email

    @app.get("/staff")
    @roles_accepted("admin", "editor")
    def staff() -> object:
        return "staff"

    @app.get("/reports")
    @permissions_required("reports.read")
    def reports() -> object:
        return "reports"

    @app.get("/public")
    def public() -> object:
        return "hello"

    @app.get("/cart")
    def cart() -> object:
        return jsonify(cart=session.get("cart", 0))

    @app.post("/cart")
    def add_to_cart() -> object:
        session["cart"] = session.get("cart", 0) + 1
        return jsonify(cart=session["cart"])

    @app.post("/password")
    @login_required
    def change_password() -> object:
        current_datastore.change_password(
            current_user._get_current_object(), request.form["new_password"]
        )
        return "changed"

    return app
