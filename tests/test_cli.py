"""The ``flask users``, ``flask roles`` and ``flask sessions`` commands, on every ORM.

Each command runs as it would from a shell: in a thread of its own, with its own app
context and unit of work. The tests then read the database through the datastore (or
the backend's direct view of the session table), not only the command's output.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from click.testing import Result
from flask import Flask

from flask_sessionstore.datastore import SessionRecord, utcnow

from .backends import Backend

PASSWORD = "pw"


def run(app: Flask, ds: Any, *args: str, input: str | None = None) -> Result:
    """Run ``flask ARGS`` as a separate process would, then let ``ds`` read afresh."""
    # Close the test's own unit of work first: the command must not see (or wait for)
    # it, and afterwards the test must not read stale objects or an old snapshot.
    ds.rollback()
    results: list[Result] = []
    # Another thread, so that the command shares nothing with the test: not its app
    # context, nor its ORM session, whether the ORM keys that by context or by thread.
    command = threading.Thread(target=lambda: results.append(
        app.test_cli_runner().invoke(args=list(args), input=input)))
    command.start()
    command.join()
    ds.rollback()
    return results[0]


def ok(result: Result) -> str:
    """Assert that the command succeeded; return what it printed."""
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def fails(result: Result, message: str) -> None:
    """Assert that the command was refused with one clear line on stderr."""
    assert result.exit_code == 1, (result.output, result.exception)
    # A ClickException exits through SystemExit; anything else escaped the command.
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.output


def usage_error(result: Result, message: str) -> None:
    """Assert that click refused the arguments (exit status 2)."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert message in result.stderr, result.stderr


def seed(ds: Any) -> None:
    ds.create_role(name="admin", description="Runs the site", permissions=["users.manage"])
    ds.create_role(name="analyst", permissions=["reports.read"])
    ds.create_user(email="ann@example.com", password=PASSWORD, roles=["admin"])
    ds.create_user(email="bob@example.com", password=PASSWORD)


def user(ds: Any, email: str) -> Any:
    return ds.find_user(case_insensitive=True, email=email)


def role_names(ds: Any, email: str) -> set[str]:
    return {role.name for role in ds.models.roles_of(user(ds, email))}


def login(ds: Any, email: str) -> str:
    return str(ds.create_session(email, verify_password=False))


def keys_of(backend: Backend, owner: Any = None) -> set[str]:
    rows = backend.session_rows()
    if owner is None:
        return {row["key"] for row in rows}
    return {row["key"] for row in rows if row["user_id"] == owner}


# -- flask users create --------------------------------------------------------------


def test_users_create(app: Flask, ds: Any) -> None:
    seed(ds)
    out = ok(run(app, ds, "users", "create", "cy@example.com", "--password", "s3cret",
                 "--role", "admin", "--role", "analyst"))
    assert "Created user cy@example.com" in out
    created = user(ds, "cy@example.com")
    assert created is not None and created.active
    assert role_names(ds, "cy@example.com") == {"admin", "analyst"}
    assert created.password != "s3cret"
    assert ds.authenticate("cy@example.com", "s3cret") is not None


def test_users_create_prompts_twice_for_a_hidden_password(app: Flask, ds: Any) -> None:
    result = run(app, ds, "users", "create", "cy@example.com", "--inactive",
                 input="s3cret\ns3cret\n")
    ok(result)
    assert "s3cret" not in result.output  # hidden input is not echoed
    created = user(ds, "cy@example.com")
    assert created is not None and not created.active
    assert ds.password_hasher.verify("s3cret", created.password)[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ANN@example.com", "--password", "x"), "already exists"),
        (("cy@example.com", "--password", "x", "--role", "nosuch"), "no role named 'nosuch'"),
        (("cy@example.com", "--password", ""), "must not be empty"),
        (("cy@example.com", "--password", "x" * 1025), "at most 1024 characters"),
        # Refused before the password is asked for.
        (("ann@example.com",), "already exists"),
        (("cy@example.com", "--role", "nosuch"), "no role named 'nosuch'"),
    ],
    ids=["duplicate-email", "unknown-role", "empty-password", "long-password",
         "duplicate-email-no-prompt", "unknown-role-no-prompt"],
)
def test_users_create_refuses_bad_input(app: Flask, ds: Any, args: tuple[str, ...],
                                        message: str) -> None:
    seed(ds)
    result = run(app, ds, "users", "create", *args)
    fails(result, message)
    assert "Password" not in result.output
    assert user(ds, "cy@example.com") is None
    # The existing user is untouched.
    assert ds.authenticate("ann@example.com", PASSWORD) is not None
    assert role_names(ds, "ann@example.com") == {"admin"}


def test_users_create_mismatched_prompt_creates_nobody(app: Flask, ds: Any) -> None:
    result = run(app, ds, "users", "create", "cy@example.com", input="one\ntwo\n")
    assert result.exit_code == 1
    assert "do not match" in result.output
    assert user(ds, "cy@example.com") is None


# -- flask users list / show -----------------------------------------------------------


def test_users_list(app: Flask, ds: Any) -> None:
    seed(ds)
    ds.create_user(email="cy@example.com", password=PASSWORD, active=False, roles=["admin"])
    lines = ok(run(app, ds, "users", "list")).splitlines()
    assert lines[0].split() == ["ID", "USER", "ACTIVE", "ROLES"]
    assert [line.split()[1:3] for line in lines[1:]] == [
        ["ann@example.com", "yes"], ["bob@example.com", "yes"], ["cy@example.com", "no"],
    ]
    # Aligned: every row's second column starts where its header does.
    column = lines[0].index("USER")
    assert all(line[column:].startswith(("USER", "ann", "bob", "cy")) for line in lines)

    admins = ok(run(app, ds, "users", "list", "--role", "admin")).splitlines()[1:]
    assert [line.split()[1] for line in admins] == ["ann@example.com", "cy@example.com"]
    inactive = ok(run(app, ds, "users", "list", "--inactive-only")).splitlines()[1:]
    assert [line.split()[1] for line in inactive] == ["cy@example.com"]
    none = ok(run(app, ds, "users", "list", "--inactive-only", "--role", "analyst"))
    assert none.strip() == "No users."


def test_users_list_unknown_role(app: Flask, ds: Any) -> None:
    seed(ds)
    fails(run(app, ds, "users", "list", "--role", "nosuch"), "no role named 'nosuch'")


def test_users_show(app: Flask, ds: Any) -> None:
    seed(ds)
    ds.add_role_to_user(user(ds, "ann@example.com"), "analyst")
    login(ds, "ann@example.com")
    login(ds, "ann@example.com")
    login(ds, "bob@example.com")
    pk = str(ds.user_pk(user(ds, "ann@example.com")))
    for identifier in ("Ann@Example.com", pk):
        out = ok(run(app, ds, "users", "show", identifier))
        fields = dict(line.split(":", 1) for line in out.splitlines())
        fields = {name: value.strip() for name, value in fields.items()}
        assert fields["id"] == pk
        assert fields["email"] == "ann@example.com"
        assert fields["active"] == "yes"
        assert fields["roles"] == "admin, analyst"
        assert fields["permissions"] == "reports.read, users.manage"
        assert fields["sessions"] == "2 live"


def test_users_show_unknown_user(app: Flask, ds: Any) -> None:
    seed(ds)
    fails(run(app, ds, "users", "show", "nobody@example.com"), "No user matches")


# -- flask users activate / deactivate / delete / set-password -------------------------


def test_users_deactivate_and_activate(app: Flask, ds: Any, backend: Backend) -> None:
    seed(ds)
    login(ds, "ann@example.com")
    login(ds, "ann@example.com")
    bob_session = login(ds, "bob@example.com")
    ann_pk = ds.user_pk(user(ds, "ann@example.com"))

    out = ok(run(app, ds, "users", "deactivate", "ann@example.com"))
    assert "ended 2 sessions" in out
    assert not user(ds, "ann@example.com").active
    assert keys_of(backend, ann_pk) == set()
    assert ds.retrieve_session(bob_session) is not None
    assert ds.authenticate("ann@example.com", PASSWORD) is None
    assert "already inactive" in ok(run(app, ds, "users", "deactivate", "ann@example.com"))

    assert "Activated" in ok(run(app, ds, "users", "activate", "ann@example.com"))
    assert user(ds, "ann@example.com").active
    assert ds.authenticate("ann@example.com", PASSWORD) is not None
    assert "already active" in ok(run(app, ds, "users", "activate", "ann@example.com"))


@pytest.mark.parametrize("command", ["activate", "deactivate"])
def test_users_activate_deactivate_unknown_user(app: Flask, ds: Any, command: str) -> None:
    seed(ds)
    fails(run(app, ds, "users", command, "nobody@example.com"), "No user matches")
    assert user(ds, "ann@example.com").active


def test_users_delete(app: Flask, ds: Any, backend: Backend) -> None:
    seed(ds)
    login(ds, "ann@example.com")
    bob_session = login(ds, "bob@example.com")
    # Without --yes, a "no" keeps the user.
    kept = run(app, ds, "users", "delete", "ann@example.com", input="n\n")
    assert kept.exit_code == 1 and "Aborted" in kept.output
    assert user(ds, "ann@example.com") is not None
    assert len(keys_of(backend)) == 2

    out = ok(run(app, ds, "users", "delete", "ann@example.com", input="y\n"))
    assert "Deleted user ann@example.com; ended 1 session." in out
    assert user(ds, "ann@example.com") is None
    assert keys_of(backend) == keys_of(backend, ds.user_pk(user(ds, "bob@example.com")))
    assert ds.retrieve_session(bob_session) is not None
    ok(run(app, ds, "users", "delete", "bob@example.com", "--yes"))
    assert user(ds, "bob@example.com") is None
    assert keys_of(backend) == set()


def test_users_delete_unknown_user(app: Flask, ds: Any) -> None:
    seed(ds)
    fails(run(app, ds, "users", "delete", "nobody@example.com", "--yes"), "No user matches")
    assert user(ds, "ann@example.com") is not None and user(ds, "bob@example.com") is not None


def test_users_set_password(app: Flask, ds: Any, backend: Backend) -> None:
    seed(ds)
    login(ds, "ann@example.com")
    bob_session = login(ds, "bob@example.com")
    out = ok(run(app, ds, "users", "set-password", "ann@example.com", "--password", "n3w"))
    assert "ended 1 session" in out
    assert ds.authenticate("ann@example.com", PASSWORD) is None
    assert ds.authenticate("ann@example.com", "n3w") is not None
    assert keys_of(backend, ds.user_pk(user(ds, "ann@example.com"))) == set()
    assert ds.retrieve_session(bob_session) is not None
    ok(run(app, ds, "users", "set-password", "bob@example.com", input="n3w\nn3w\n"))
    assert ds.authenticate("bob@example.com", "n3w") is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nobody@example.com", "--password", "n3w"), "No user matches"),
        (("nobody@example.com",), "No user matches"),  # refused before the prompt
        (("ann@example.com", "--password", ""), "must not be empty"),
        (("ann@example.com", "--password", "x" * 1025), "at most 1024 characters"),
    ],
    ids=["unknown-user", "unknown-user-no-prompt", "empty-password", "long-password"],
)
def test_users_set_password_refuses_bad_input(app: Flask, ds: Any, backend: Backend,
                                              args: tuple[str, ...], message: str) -> None:
    seed(ds)
    login(ds, "ann@example.com")
    fails(run(app, ds, "users", "set-password", *args), message)
    assert ds.authenticate("ann@example.com", PASSWORD) is not None
    assert len(keys_of(backend)) == 1


# -- flask roles ---------------------------------------------------------------------


def test_roles_create(app: Flask, ds: Any) -> None:
    out = ok(run(app, ds, "roles", "create", "editor", "--description", "Writes pages",
                 "--permissions", "pages.edit,pages.publish"))
    assert "Created role editor granting pages.edit, pages.publish." in out
    role = ds.find_role("editor")
    assert role.description == "Writes pages"
    assert role.get_permissions() == {"pages.edit", "pages.publish"}
    ok(run(app, ds, "roles", "create", "viewer"))
    assert ds.find_role("viewer").get_permissions() == frozenset()


@pytest.mark.parametrize(
    ("name", "message"),
    [("admin", "already exists"), ("", "non-empty string name")],
    ids=["duplicate", "empty"],
)
def test_roles_create_refuses_bad_input(app: Flask, ds: Any, name: str, message: str) -> None:
    seed(ds)
    fails(run(app, ds, "roles", "create", name, "--description", "Other"), message)
    assert ds.find_role("admin").description == "Runs the site"
    assert sorted(line.split()[0] for line in
                  ok(run(app, ds, "roles", "list")).splitlines()[1:]) == ["admin", "analyst"]


def test_roles_list(app: Flask, ds: Any) -> None:
    assert ok(run(app, ds, "roles", "list")).strip() == "No roles."
    seed(ds)
    lines = ok(run(app, ds, "roles", "list")).splitlines()
    assert lines[0].split() == ["NAME", "DESCRIPTION", "PERMISSIONS"]
    column = lines[0].index("PERMISSIONS")
    assert [line[column:] for line in lines[1:]] == ["users.manage", "reports.read"]
    assert lines[1].startswith("admin") and "Runs the site" in lines[1]
    assert lines[2].startswith("analyst")


def test_roles_list_refuses_arguments(app: Flask, ds: Any) -> None:
    usage_error(run(app, ds, "roles", "list", "admin"), "unexpected extra argument")


def test_roles_delete(app: Flask, ds: Any) -> None:
    seed(ds)
    # analyst is the newest role: on SQLite a role made after its deletion may get its
    # id again, so a link row left behind would grant the new role to the old holders.
    for email in ("ann@example.com", "bob@example.com"):
        ds.add_role_to_user(user(ds, email), "analyst")
    kept = run(app, ds, "roles", "delete", "analyst", input="n\n")
    assert kept.exit_code == 1 and "Aborted" in kept.output
    assert ds.find_role("analyst") is not None

    assert "Deleted role analyst." in ok(run(app, ds, "roles", "delete", "analyst", "--yes"))
    assert ds.find_role("analyst") is None
    assert role_names(ds, "ann@example.com") == {"admin"}
    assert role_names(ds, "bob@example.com") == set()
    assert not user(ds, "bob@example.com").has_role("analyst")
    ds.create_role(name="analyst")
    assert role_names(ds, "ann@example.com") == {"admin"}
    assert role_names(ds, "bob@example.com") == set()
    assert "roles:       -" in ok(run(app, ds, "users", "show", "bob@example.com"))


def test_roles_delete_unknown_role(app: Flask, ds: Any) -> None:
    seed(ds)
    fails(run(app, ds, "roles", "delete", "nosuch", "--yes"), "no role named 'nosuch'")
    assert role_names(ds, "ann@example.com") == {"admin"}


def test_roles_add_and_remove(app: Flask, ds: Any) -> None:
    seed(ds)
    assert "Granted analyst to bob@example.com." in ok(
        run(app, ds, "roles", "add", "bob@example.com", "analyst"))
    assert role_names(ds, "bob@example.com") == {"analyst"}
    assert "already has" in ok(run(app, ds, "roles", "add", "bob@example.com", "analyst"))
    assert role_names(ds, "bob@example.com") == {"analyst"}

    assert "Removed admin from ann@example.com." in ok(
        run(app, ds, "roles", "remove", "ann@example.com", "admin"))
    assert role_names(ds, "ann@example.com") == set()
    assert "does not have" in ok(run(app, ds, "roles", "remove", "ann@example.com", "admin"))


@pytest.mark.parametrize("command", ["add", "remove"])
@pytest.mark.parametrize(
    ("who", "what", "message"),
    [("nobody@example.com", "admin", "No user matches"),
     ("ann@example.com", "nosuch", "no role named 'nosuch'")],
    ids=["unknown-user", "unknown-role"],
)
def test_roles_add_remove_refuse_bad_input(app: Flask, ds: Any, command: str, who: str,
                                           what: str, message: str) -> None:
    seed(ds)
    fails(run(app, ds, "roles", command, who, what), message)
    assert role_names(ds, "ann@example.com") == {"admin"}
    assert role_names(ds, "bob@example.com") == set()


def test_roles_permissions(app: Flask, ds: Any) -> None:
    seed(ds)
    out = ok(run(app, ds, "roles", "add-permissions", "analyst", "reports.write",
                 "exports.run,exports.read"))
    assert "now grants: exports.read, exports.run, reports.read, reports.write" in out
    assert ds.find_role("analyst").get_permissions() == {
        "reports.read", "reports.write", "exports.run", "exports.read"}
    out = ok(run(app, ds, "roles", "remove-permissions", "analyst", "exports.run",
                 "reports.read"))
    assert "now grants: exports.read, reports.write" in out
    assert ds.find_role("analyst").get_permissions() == {"reports.write", "exports.read"}
    out = ok(run(app, ds, "roles", "remove-permissions", "analyst", "never.granted"))
    assert "still grants" in out
    assert user(ds, "ann@example.com").get_permissions() == {"users.manage"}


@pytest.mark.parametrize("command", ["add-permissions", "remove-permissions"])
def test_roles_permissions_refuse_bad_input(app: Flask, ds: Any, command: str) -> None:
    seed(ds)
    fails(run(app, ds, "roles", command, "nosuch", "reports.read"), "no role named 'nosuch'")
    usage_error(run(app, ds, "roles", command, "analyst"), "Missing argument 'PERMISSIONS")
    assert ds.find_role("analyst").get_permissions() == {"reports.read"}


# -- flask sessions list -------------------------------------------------------------


def browser_login(app: Flask, email: str, agent: str, address: str) -> None:
    client = app.test_client()
    response = client.post("/login", data={"email": email, "password": PASSWORD},
                           headers={"User-Agent": agent},
                           environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 200, response.data


def test_sessions_list(app: Flask, ds: Any, backend: Backend) -> None:
    seed(ds)
    browser_login(app, "ann@example.com", "Firefox/140.0", "203.0.113.7")
    ds.create_session()  # anonymous
    login(ds, "bob@example.com")
    rows = {row["key"]: row for row in backend.session_rows()}

    lines = ok(run(app, ds, "sessions", "list")).splitlines()
    assert lines[0].split() == ["KEY", "USER", "CREATED", "LAST", "SEEN", "EXPIRES",
                                "USER", "AGENT", "IP"]
    assert lines[-1] == "Page 1 of 1, 3 sessions."
    body = lines[1:-1]
    assert len(body) == 3
    assert {line.split()[0] for line in body} == {key[:12] for key in rows}
    ann = next(line for line in body if "ann@example.com" in line)
    ann_key = next(key for key in rows if ann.startswith(key[:12]))
    assert "Firefox/140.0" in ann and ann.rstrip().endswith("203.0.113.7")
    record = ds.sessions.get(ann_key)
    assert f"{record.created_at:%Y-%m-%d %H:%M:%S}" in ann
    assert f"{record.expires_at:%Y-%m-%d %H:%M:%S}" in ann
    assert any("(anonymous)" in line for line in body)
    # The columns line up under their headers.
    assert all(line[lines[0].index("USER"):].startswith(("ann", "bob", "(anonymous)"))
               for line in body)

    only_ann = ok(run(app, ds, "sessions", "list", "--user", "ann@example.com"))
    assert only_ann.splitlines()[1].startswith(ann_key[:12])
    assert only_ann.splitlines()[-1] == "Page 1 of 1, 1 session."
    anonymous = ok(run(app, ds, "sessions", "list", "--anonymous")).splitlines()
    assert len(anonymous) == 3 and "(anonymous)" in anonymous[1]

    pages = [ok(run(app, ds, "sessions", "list", "--per-page", "2", "--page", str(n)))
             for n in (1, 2, 3)]
    assert pages[0].splitlines()[-1] == "Page 1 of 2, 3 sessions."
    assert len(pages[0].splitlines()) == 4 and len(pages[1].splitlines()) == 3
    shown = {line.split()[0] for page in pages[:2] for line in page.splitlines()[1:-1]}
    assert shown == {key[:12] for key in rows}
    assert pages[2].strip() == "No sessions on page 3 of 2."


@pytest.mark.parametrize(
    ("args", "message"),
    [(("--user", "ann@example.com", "--anonymous"), "cannot be used together"),
     (("--page", "0"), "Invalid value for '--page'"),
     (("--per-page", "x"), "Invalid value for '--per-page'")],
    ids=["user-and-anonymous", "page-zero", "per-page-not-a-number"],
)
def test_sessions_list_refuses_bad_input(app: Flask, ds: Any, args: tuple[str, ...],
                                         message: str) -> None:
    seed(ds)
    usage_error(run(app, ds, "sessions", "list", *args), message)


def test_sessions_list_unknown_user(app: Flask, ds: Any) -> None:
    seed(ds)
    fails(run(app, ds, "sessions", "list", "--user", "nobody@example.com"), "No user matches")


# -- flask sessions revoke / revoke-user ---------------------------------------------


def stored(ds: Any, key: str, user_pk: Any = None) -> None:
    """Store a session row under a chosen key (real keys are random hashes)."""
    now = utcnow().replace(microsecond=0)
    ds.rows.insert(SessionRecord(
        key=key, user_pk=user_pk, data="{}", created_at=now, last_seen_at=now,
        expires_at=now + timedelta(hours=1),
    ))


def test_sessions_revoke(app: Flask, ds: Any, backend: Backend) -> None:
    seed(ds)
    first, second, third = "abcdef01" + "0" * 56, "abcdef02" + "1" * 56, "abcdef02" + "2" * 56
    for key in (first, second, third):
        stored(ds, key)
    assert "Ended session abcdef010000." in ok(run(app, ds, "sessions", "revoke", "ABCDEF01"))
    assert keys_of(backend) == {second, third}
    ok(run(app, ds, "sessions", "revoke", third))
    assert keys_of(backend) == {second}
    ok(run(app, ds, "sessions", "revoke", "abcdef0211"))
    assert keys_of(backend) == set()


@pytest.mark.parametrize(
    ("prefix", "message"),
    [("abcdef02", "matches several sessions (abcdef021111, abcdef022222)"),
     ("abcdef03", "No live session has a key starting with 'abcdef03'"),
     ("abcdef03" + "0" * 56, "No session has the key")],
    ids=["ambiguous", "unknown-prefix", "unknown-key"],
)
def test_sessions_revoke_refuses_unknown_or_ambiguous(app: Flask, ds: Any, backend: Backend,
                                                      prefix: str, message: str) -> None:
    keys = {"abcdef02" + "1" * 56, "abcdef02" + "2" * 56}
    for key in keys:
        stored(ds, key)
    fails(run(app, ds, "sessions", "revoke", prefix), message)
    assert keys_of(backend) == keys


@pytest.mark.parametrize("prefix", ["abcdef0", "not-hex-at-all", "a" * 65])
def test_sessions_revoke_refuses_malformed_keys(app: Flask, ds: Any, backend: Backend,
                                                prefix: str) -> None:
    stored(ds, "a" * 64)
    usage_error(run(app, ds, "sessions", "revoke", prefix), "8 to 64 hexadecimal characters")
    assert keys_of(backend) == {"a" * 64}


def test_sessions_revoke_user(app: Flask, ds: Any, backend: Backend) -> None:
    seed(ds)
    ann_sessions = [login(ds, "ann@example.com") for _ in range(2)]
    bob_session = login(ds, "bob@example.com")
    out = ok(run(app, ds, "sessions", "revoke-user", "ANN@example.com"))
    assert out.strip() == "Ended 2 sessions of ann@example.com."
    assert all(ds.retrieve_session(token) is None for token in ann_sessions)
    assert ds.retrieve_session(bob_session) is not None
    assert keys_of(backend, ds.user_pk(user(ds, "ann@example.com"))) == set()
    assert "Ended 0 sessions" in ok(run(app, ds, "sessions", "revoke-user", "ann@example.com"))


def test_sessions_revoke_user_unknown_user(app: Flask, ds: Any, backend: Backend) -> None:
    seed(ds)
    login(ds, "ann@example.com")
    fails(run(app, ds, "sessions", "revoke-user", "nobody@example.com"), "No user matches")
    assert len(keys_of(backend)) == 1


# -- flask sessions cleanup / stats ----------------------------------------------------


def test_sessions_cleanup(app: Flask, ds: Any, backend: Backend, clock: Any) -> None:
    seed(ds)
    for _ in range(3):
        login(ds, "ann@example.com")
        ds.create_session()
    clock.advance(timedelta(hours=13).total_seconds())  # past every default limit
    live = login(ds, "bob@example.com")
    out = ok(run(app, ds, "sessions", "cleanup", "--batch-size", "4")).splitlines()
    assert out[:2] == ["Batch 1: deleted 4 (4 so far).", "Batch 2: deleted 2 (6 so far)."]
    assert out[2] == "Deleted 6 expired sessions as of 2030-01-02 01:00:00 UTC."
    assert len(out) == 3
    assert len(backend.session_rows()) == 1
    assert ds.retrieve_session(live) is not None
    assert ok(run(app, ds, "sessions", "cleanup")).splitlines() == [
        "Deleted 0 expired sessions as of 2030-01-02 01:00:00 UTC."]


def test_sessions_cleanup_refuses_bad_batch_size(app: Flask, ds: Any, backend: Backend,
                                                 clock: Any) -> None:
    ds.create_session()
    clock.advance(timedelta(hours=3).total_seconds())
    usage_error(run(app, ds, "sessions", "cleanup", "--batch-size", "0"),
                "Invalid value for '--batch-size'")
    assert len(backend.session_rows()) == 1


def test_sessions_stats(app: Flask, ds: Any, clock: Any) -> None:
    seed(ds)
    ds.create_session()
    clock.advance(timedelta(hours=3).total_seconds())  # the anonymous one expires
    for _ in range(10):
        login(ds, "ann@example.com")
    ds.create_session()
    ds.create_session()
    out = ok(run(app, ds, "sessions", "stats"))
    fields = {name.strip(): value.split()[0]
              for name, value in (line.split(":") for line in out.splitlines())}
    assert fields == {"live": "12", "authenticated": "10", "anonymous": "2", "expired": "1"}
    assert ds.sessions.stats() == {"live": 12, "authenticated": 10, "anonymous": 2,
                                   "expired": 1}
    # The numbers are right-aligned in one column: they all end at the same place.
    assert len({len(line.split("(")[0].rstrip()) for line in out.splitlines()}) == 1


def test_sessions_stats_refuses_arguments(app: Flask, ds: Any) -> None:
    usage_error(run(app, ds, "sessions", "stats", "now"), "unexpected extra argument")
