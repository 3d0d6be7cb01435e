"""The ``flask users``, ``flask roles`` and ``flask sessions`` commands.

Every command goes through :data:`~flask_sessionstore.current_datastore`, so it works
on whichever ORM the app uses. Errors the library raises on purpose (an unknown user, a
duplicate email, an unusable password...) become one line on stderr and exit status 1;
malformed arguments are usage errors (status 2). The library checks its input before it
writes, so a refused command has changed nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, TypeVar

import click
from flask import Flask
from flask.cli import AppGroup

from .exceptions import SessionStoreError, UnknownRoleError, UnknownUserError
from .mixins import parse_permissions
from .records import short_hash, utcnow
from .state import current_datastore

__all__ = ["register_commands", "roles_cli", "sessions_cli", "users_cli"]

F = TypeVar("F", bound=Callable[..., Any])

#: A session key is the SHA-256 of the id in hex; a shorter prefix must still be long
#: enough that a typo is unlikely to name another session.
_KEY_PREFIX = re.compile(r"[0-9a-f]{8,64}")
_KEY_LENGTH = 64
#: Sessions read per query while looking for a key prefix.
_SCAN_PAGE = 500
_USER_AGENT_WIDTH = 40


class _Group(AppGroup):
    """An :class:`~flask.cli.AppGroup` whose commands report library errors as one line.

    :class:`~flask_sessionstore.exceptions.SessionStoreError` is what the library raises
    for input it refuses; anything else (a driver error, a bug) keeps its traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SessionStoreError as exc:
            raise click.ClickException(str(exc)) from exc


users_cli = _Group("users", help="Create, inspect and change users.")
roles_cli = _Group("roles", help="Create roles and grant them to users.")
sessions_cli = _Group("sessions", help="Inspect and end server-side sessions.")


def register_commands(app: Flask) -> None:
    """Add the ``users``, ``roles`` and ``sessions`` command groups to ``app.cli``."""
    for group in (users_cli, roles_cli, sessions_cli):
        app.cli.add_command(group)


# ----------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------


def _password_option(help_text: str) -> Callable[[F], F]:
    return click.option("--password", metavar="PASSWORD", help=help_text)


def _ask_password(given: str | None) -> str:
    # Prompted for (hidden, typed twice) when not given, so that it need not appear in
    # the shell's history or the process list. Asked only once the other arguments are
    # known to be good, so that nobody types a password for a command that will fail.
    if given is not None:
        return given
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


def _unit() -> AbstractContextManager[None]:
    """One unit of work for a command's reads and writes: committed together, or rolled
    back together when the command fails.

    It also keeps the objects read in it usable until it ends (Pony binds them to a
    ``db_session``). It is never held open while a prompt waits for an answer.
    """
    return current_datastore.transaction()


def _find_user(identifier: str) -> Any:
    user = current_datastore.get_user(identifier)
    if user is None:
        raise UnknownUserError(f"No user matches {identifier!r}.")
    return user


def _find_role(name: str) -> Any:
    role = current_datastore.find_role(name)
    if role is None:
        raise UnknownRoleError(f"There is no role named {name!r}.")
    return role


def _label(user: Any) -> str:
    """The name an administrator knows ``user`` by: its email (or other identity
    attribute), else its primary key."""
    for attribute in current_datastore.identity_attributes:
        value = getattr(user, attribute, None)
        if value:
            return str(value)
    return str(current_datastore.user_pk(user))


def _role_names(user: Any) -> list[str]:
    return sorted(str(role.name) for role in current_datastore.models.roles_of(user))


def _permissions(roles: Iterable[Any]) -> list[str]:
    found: set[str] = set()
    for role in roles:
        found |= parse_permissions(getattr(role, "permissions", None))
    return sorted(found)


def _is_active(user: Any) -> bool:
    return bool(getattr(user, "is_active", True))


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment is not None else "-"


def _clip(text: str | None, width: int) -> str:
    if not text:
        return "-"
    return text if len(text) <= width else text[: width - 3] + "..."


def _echo_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` under ``headers``, each column as wide as its widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in (headers, *rows):
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        click.echo("  ".join(cells).rstrip())


def _echo_fields(fields: Sequence[tuple[str, str]]) -> None:
    """Print ``name: value`` lines with the values aligned."""
    width = max(len(name) for name, _ in fields) + 1
    for name, value in fields:
        click.echo(f"{name + ':':<{width}} {value}")


def _sessions_of(user: Any) -> int:
    return current_datastore.sessions.count(user=user)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# ----------------------------------------------------------------------------------
# flask users
# ----------------------------------------------------------------------------------


@users_cli.command("create")
@click.argument("email")
@_password_option("The new user's password; prompted for when omitted.")
@click.option("--role", "roles", multiple=True, metavar="ROLE",
              help="A role to grant; repeat for several.")
@click.option("--inactive", is_flag=True, help="Create the user deactivated.")
def create_user_command(email: str, password: str | None, roles: tuple[str, ...],
                        inactive: bool) -> None:
    """Create a user with the address EMAIL."""
    ds = current_datastore
    if not email.strip():
        raise click.BadParameter("must not be empty.", param_hint="EMAIL")
    if not hasattr(ds.user_model, "email"):
        raise click.ClickException(f"{ds.user_model.__name__} has no 'email' attribute.")
    if inactive and not hasattr(ds.user_model, "active"):
        raise click.ClickException(
            f"{ds.user_model.__name__} has no 'active' attribute; --inactive needs one."
        )
    # create_user checks all of this again before it writes; checked here too so that
    # the password is not asked for in vain.
    with _unit():
        if ds.find_user(case_insensitive=True, email=email) is not None:
            raise click.ClickException(f"A user with email {email!r} already exists.")
        for name in roles:
            _find_role(name)
    fields: dict[str, Any] = {
        "email": email, "password": _ask_password(password), "roles": list(roles),
    }
    if inactive:
        fields["active"] = False
    with _unit():
        user = ds.create_user(**fields)
        done = (f"Created user {_label(user)} (id {ds.user_pk(user)}"
                f"{', inactive' if inactive else ''}"
                f"{', roles: ' + ', '.join(_role_names(user)) if roles else ''}).")
    click.echo(done)


@users_cli.command("list")
@click.option("--role", metavar="ROLE", help="Only the users holding ROLE.")
@click.option("--inactive-only", is_flag=True, help="Only the deactivated users.")
def list_users_command(role: str | None, inactive_only: bool) -> None:
    """List users, whether they are active, and their roles."""
    ds = current_datastore
    rows = []
    with _unit():
        wanted = _find_role(role).name if role is not None else None
        for user in ds.list_users():
            if inactive_only and _is_active(user):
                continue
            names = _role_names(user)
            if wanted is not None and wanted not in names:
                continue
            rows.append((str(ds.user_pk(user)), _label(user),
                         "yes" if _is_active(user) else "no", ", ".join(names) or "-"))
    if not rows:
        click.echo("No users.")
        return
    rows.sort(key=lambda row: row[1].lower())
    _echo_table(("ID", "USER", "ACTIVE", "ROLES"), rows)


@users_cli.command("show")
@click.argument("identifier")
def show_user_command(identifier: str) -> None:
    """Show a user's roles, permissions and session count.

    IDENTIFIER is an email (or another identity attribute) or an id.
    """
    ds = current_datastore
    with _unit():
        user = _find_user(identifier)
        roles = list(ds.models.roles_of(user))
        fields = [("id", str(ds.user_pk(user)))]
        fields += [(name, str(getattr(user, name) or "-")) for name in ds.identity_attributes]
        fields += [
            ("active", "yes" if _is_active(user) else "no"),
            ("roles", ", ".join(sorted(str(role.name) for role in roles)) or "-"),
            ("permissions", ", ".join(_permissions(roles)) or "-"),
            ("sessions", f"{_sessions_of(user)} live"),
        ]
    _echo_fields(fields)


@users_cli.command("activate")
@click.argument("identifier")
def activate_user_command(identifier: str) -> None:
    """Let a deactivated user log in again."""
    with _unit():
        user = _find_user(identifier)
        label = _label(user)
        changed = current_datastore.activate_user(user)
    click.echo(f"Activated {label}." if changed else f"{label} is already active.")


@users_cli.command("deactivate")
@click.argument("identifier")
def deactivate_user_command(identifier: str) -> None:
    """Deactivate a user and end their sessions."""
    with _unit():
        user = _find_user(identifier)
        label = _label(user)
        sessions = _sessions_of(user)
        changed = current_datastore.deactivate_user(user)
    # The sessions end when the unit commits: only now is this true.
    click.echo(f"Deactivated {label}; ended {_plural(sessions, 'session')}." if changed
               else f"{label} is already inactive.")


@users_cli.command("delete")
@click.argument("identifier")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_user_command(identifier: str, yes: bool) -> None:
    """Delete a user with their role links and sessions."""
    label = _label(_find_user(identifier))
    if not yes:
        click.confirm(f"Delete user {label} and all their sessions?", abort=True)
    with _unit():
        # Found again: the answer may have come much later.
        user = _find_user(identifier)
        sessions = _sessions_of(user)
        current_datastore.delete_user(user)
    click.echo(f"Deleted user {label}; ended {_plural(sessions, 'session')}.")


@users_cli.command("set-password")
@click.argument("identifier")
@_password_option("The new password; prompted for when omitted.")
def set_password_command(identifier: str, password: str | None) -> None:
    """Set a user's password and end their sessions."""
    _find_user(identifier)
    new_password = _ask_password(password)
    with _unit():
        user = _find_user(identifier)
        label = _label(user)
        sessions = _sessions_of(user)
        current_datastore.change_password(user, new_password)
    click.echo(f"Changed the password of {label}; ended {_plural(sessions, 'session')}.")


# ----------------------------------------------------------------------------------
# flask roles
# ----------------------------------------------------------------------------------


@roles_cli.command("create")
@click.argument("name")
@click.option("--description", help="What the role is for.")
@click.option("--permissions", metavar="P1,P2", help="Permissions the role grants.")
def create_role_command(name: str, description: str | None, permissions: str | None) -> None:
    """Create the role NAME."""
    ds = current_datastore
    fields: dict[str, Any] = {"name": name}
    # Checked here: the model would refuse an unknown keyword with a bare TypeError.
    for option, value in (("description", description), ("permissions", permissions)):
        if value is not None:
            if not hasattr(ds.role_model, option):
                raise click.ClickException(
                    f"{ds.role_model.__name__} has no {option!r} attribute; "
                    f"--{option} needs one."
                )
            fields[option] = value
    with _unit():
        role = ds.create_role(**fields)
        granted = _permissions([role])
    click.echo(f"Created role {name}{' granting ' + ', '.join(granted) if granted else ''}.")


@roles_cli.command("list")
def list_roles_command() -> None:
    """List roles with their descriptions and permissions."""
    with _unit():
        rows = sorted(
            (str(role.name), str(getattr(role, "description", None) or "-"),
             ", ".join(_permissions([role])) or "-")
            for role in current_datastore.list_roles()
        )
    if not rows:
        click.echo("No roles.")
        return
    _echo_table(("NAME", "DESCRIPTION", "PERMISSIONS"), rows)


@roles_cli.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_role_command(name: str, yes: bool) -> None:
    """Delete a role; the users holding it lose it."""
    _find_role(name)
    if not yes:
        click.confirm(f"Delete role {name!r}? Every user holding it loses it.", abort=True)
    # The datastore has no delete_role: its ``delete`` primitive removes the role and
    # its links to users, in one unit of work.
    with _unit():
        current_datastore.delete(_find_role(name))
    click.echo(f"Deleted role {name}.")


@roles_cli.command("add")
@click.argument("identifier", metavar="USER")
@click.argument("name", metavar="ROLE")
def add_role_command(identifier: str, name: str) -> None:
    """Grant ROLE to USER (an email or an id)."""
    _change_role(identifier, name, grant=True)


@roles_cli.command("remove")
@click.argument("identifier", metavar="USER")
@click.argument("name", metavar="ROLE")
def remove_role_command(identifier: str, name: str) -> None:
    """Take ROLE away from USER."""
    _change_role(identifier, name, grant=False)


def _change_role(identifier: str, name: str, *, grant: bool) -> None:
    ds = current_datastore
    with _unit():
        user = _find_user(identifier)
        label = _label(user)
        change = ds.add_role_to_user if grant else ds.remove_role_from_user
        changed = change(user, _find_role(name))
    if grant:
        click.echo(f"Granted {name} to {label}." if changed else f"{label} already has {name}.")
    else:
        click.echo(f"Removed {name} from {label}." if changed else f"{label} does not have {name}.")


def _edit_permissions(name: str, permissions: tuple[str, ...], *, add: bool) -> None:
    ds = current_datastore
    # Each argument may hold several names ("a,b"). They are split here: a list given to
    # the datastore is taken name by name, and a name with a comma in it would be stored
    # whole by a list field but split again by a text column.
    names = sorted(frozenset().union(*(parse_permissions(arg) for arg in permissions)))
    if not names:
        raise click.BadParameter("give at least one permission name.", param_hint="PERMISSIONS")
    edit = ds.add_permissions_to_role if add else ds.remove_permissions_from_role
    with _unit():
        changed = edit(_find_role(name), names)
        # Read again: the datastore may have edited another copy of the role.
        now = ", ".join(_permissions([_find_role(name)])) or "nothing"
    click.echo(f"Role {name} {'now' if changed else 'still'} grants: {now}.")


@roles_cli.command("add-permissions")
@click.argument("name", metavar="ROLE")
@click.argument("permissions", nargs=-1, required=True)
def add_permissions_command(name: str, permissions: tuple[str, ...]) -> None:
    """Add permissions to ROLE.

    PERMISSIONS are names, given as separate arguments or separated by commas.
    """
    _edit_permissions(name, permissions, add=True)


@roles_cli.command("remove-permissions")
@click.argument("name", metavar="ROLE")
@click.argument("permissions", nargs=-1, required=True)
def remove_permissions_command(name: str, permissions: tuple[str, ...]) -> None:
    """Remove permissions from ROLE."""
    _edit_permissions(name, permissions, add=False)


# ----------------------------------------------------------------------------------
# flask sessions
# ----------------------------------------------------------------------------------


@sessions_cli.command("list")
@click.option("--user", "identifier", metavar="IDENTIFIER", help="Only this user's sessions.")
@click.option("--anonymous", is_flag=True, help="Only the sessions of nobody logged in.")
@click.option("--page", default=1, show_default=True, type=click.IntRange(min=1),
              help="The page to show.")
@click.option("--per-page", default=50, show_default=True, type=click.IntRange(min=1),
              help="Sessions per page.")
def list_sessions_command(identifier: str | None, anonymous: bool, page: int,
                          per_page: int) -> None:
    """List live sessions, most recently seen first. Times are UTC."""
    if identifier is not None and anonymous:
        raise click.UsageError("--user and --anonymous cannot be used together.")
    ds = current_datastore
    labels: dict[Any, str] = {}
    with _unit():
        user = _find_user(identifier) if identifier is not None else None
        selection = {"user": user, "anonymous": True if anonymous else None}
        total = ds.sessions.count(**selection)
        records = ds.sessions.get_all(page=page, per_page=per_page, **selection)
        for record in records:
            if record.user_pk is not None and record.user_pk not in labels:
                owner = ds.get_user(record.user_pk)
                labels[record.user_pk] = (
                    _label(owner) if owner is not None else f"(deleted user {record.user_pk})"
                )
    pages = max(1, -(-total // per_page))
    if not records:
        click.echo(f"No sessions on page {page} of {pages}." if total else "No sessions.")
        return
    _echo_table(
        ("KEY", "USER", "CREATED", "LAST SEEN", "EXPIRES", "USER AGENT", "IP"),
        [(short_hash(record.key),
          labels[record.user_pk] if record.user_pk is not None else "(anonymous)",
          _when(record.created_at), _when(record.last_seen_at), _when(record.expires_at),
          _clip(record.user_agent, _USER_AGENT_WIDTH), record.ip_address or "-")
         for record in records],
    )
    click.echo(f"Page {page} of {pages}, {_plural(total, 'session')}.")


def _key_for(prefix: str) -> str:
    """Return the one live session key starting with ``prefix``.

    A full key is used as it is. A shorter prefix is looked for among the live sessions,
    page by page: the datastore can only fetch by the whole key.
    """
    if len(prefix) == _KEY_LENGTH:
        return prefix
    admin = current_datastore.sessions
    found: set[str] = set()
    page = 1
    while True:
        records = admin.get_all(page=page, per_page=_SCAN_PAGE)
        found.update(record.key for record in records if record.key.startswith(prefix))
        if len(found) > 1:
            shown = ", ".join(sorted(short_hash(key) for key in found))
            raise click.ClickException(
                f"{prefix!r} matches several sessions ({shown}); give more characters."
            )
        if len(records) < _SCAN_PAGE:
            break
        page += 1
    if not found:
        raise click.ClickException(f"No live session has a key starting with {prefix!r}.")
    return found.pop()


@sessions_cli.command("revoke")
@click.argument("prefix", metavar="KEY_OR_PREFIX")
def revoke_session_command(prefix: str) -> None:
    """End one session, named by its key or a prefix of it.

    KEY_OR_PREFIX is the key 'flask sessions list' shows, or its first characters:
    at least 8 hexadecimal ones, and enough that no other live session's key starts
    with them.
    """
    prefix = prefix.strip().lower()
    if not _KEY_PREFIX.fullmatch(prefix):
        raise click.BadParameter(
            "give a session key or a prefix of it: 8 to 64 hexadecimal characters.",
            param_hint="KEY_OR_PREFIX",
        )
    key = _key_for(prefix)
    if not current_datastore.sessions.delete(key):
        raise click.ClickException(f"No session has the key {key!r}.")
    click.echo(f"Ended session {short_hash(key)}.")


@sessions_cli.command("revoke-user")
@click.argument("identifier")
def revoke_user_command(identifier: str) -> None:
    """End every session of a user ("log out everywhere")."""
    with _unit():
        user = _find_user(identifier)
        label = _label(user)
        count = current_datastore.revoke_user_sessions(user)
    click.echo(f"Ended {_plural(count, 'session')} of {label}.")


@sessions_cli.command("cleanup")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Rows deleted per statement (default: what suits the database).")
def cleanup_command(batch_size: int | None) -> None:
    """Delete expired sessions in batches, reporting each."""
    # No unit of work around it: each batch is its own short statement, committed on
    # its own, and reported so that a purge of millions of rows shows it is moving.
    batches = 0

    def report(deleted: int, total: int) -> None:
        nonlocal batches
        batches += 1
        click.echo(f"Batch {batches}: deleted {deleted} ({total} so far).")

    now = utcnow()
    total = current_datastore.delete_expired(batch_size=batch_size, on_batch=report)
    click.echo(f"Deleted {_plural(total, 'expired session')} as of {_when(now)} UTC.")


@sessions_cli.command("stats")
def stats_command() -> None:
    """Count live sessions, and expired ones not yet deleted."""
    stats = current_datastore.sessions.stats()
    width = len(str(max(stats.values())))
    _echo_fields([
        ("live", f"{stats['live']:>{width}}"),
        ("  authenticated", f"{stats['authenticated']:>{width}}"),
        ("  anonymous", f"{stats['anonymous']:>{width}}"),
        ("expired", f"{stats['expired']:>{width}}  (deleted by 'flask sessions cleanup')"),
    ])
