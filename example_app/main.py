"""The home page and the page guarded by a permission."""

from __future__ import annotations

from collections import Counter

from flask import Blueprint, render_template
from flask_login import current_user

from flask_sessionstore import permissions_required

from .web import get_backend

__all__ = ["bp"]

bp = Blueprint("main", __name__)


@bp.get("/")
def index() -> str:
    """Welcome anyone; show a signed-in user their roles and permissions."""
    roles: list[str] = []
    if current_user.is_authenticated:
        roles = get_backend().role_names(current_user)
    return render_template("index.html", roles=roles)


@bp.get("/reports")
@permissions_required("reports.read")
def reports() -> str:
    """A report on the accounts, for users granted ``reports.read`` (the analyst role)."""
    backend = get_backend()
    users = backend.users()
    per_role = Counter(name for user in users for name in backend.role_names(user))
    return render_template(
        "reports.html",
        total=len(users),
        active=sum(1 for user in users if user.is_active),
        per_role=sorted(per_role.items()),
        roles=backend.roles(),
    )
