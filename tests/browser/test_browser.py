"""The example app in a real browser: Debian's Chromium, headless, driven by Playwright.

One test walks the whole story a person would: register, log in, be refused the admin
page, get a role from an admin (in another browser), open the page it guards, log in
from a second browser, see both sessions, end the other one, and watch that browser
find itself logged out. Each step leaves a screenshot in ``tests/screenshots/``.

Needs ``apt-get install chromium`` and ``pip install playwright`` (never
``playwright install``: the system Chromium is used). Without them the test skips,
unless ``SESSIONSTORE_TEST_REQUIRE_BROWSER=1``, which makes that a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .server import ADMIN_EMAIL, ADMIN_PASSWORD, REPO_ROOT, ExampleServer, running_example

REQUIRE_BROWSER_ENV = "SESSIONSTORE_TEST_REQUIRE_BROWSER"
CHROMIUM = Path(os.environ.get("SESSIONSTORE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "tests" / "screenshots" / "example_app_flow"
#: The longest any one browser action or check may take, in milliseconds.
STEP_TIMEOUT_MS = 15_000
#: The second browser says it is a phone, so the two sessions are told apart on the page.
PHONE_USER_AGENT = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36"
)
MEMBER = "member@example.com"
MEMBER_PASSWORD = "a member's password"


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason is not None:
        if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_BROWSER_ENV}=1 requires the browser test")
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=STEP_TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            timeout=60_000,
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ExampleServer]:
    with running_example(tmp_path / "instance") as running:
        yield running


class Screens:
    """Numbered screenshots of one test, in a folder emptied first."""

    def __init__(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.folder = folder
        self.count = 0

    def take(self, page: Any, name: str) -> None:
        self.count += 1
        page.screenshot(path=self.folder / f"{self.count:02d}-{name}.png", full_page=True)


def _page(browser: Any, **options: Any) -> Any:
    context = browser.new_context(viewport={"width": 1100, "height": 760}, **options)
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    page.set_default_navigation_timeout(STEP_TIMEOUT_MS)
    return page


def _nav(page: Any, name: str) -> Any:
    """Return the link ``name`` of the top navigation bar."""
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name)


def _log_in(page: Any, base: str, email: str, password: str, *, remember: bool = False) -> None:
    from playwright.sync_api import expect

    page.goto(base + "/login")
    page.fill("#email", email)
    page.fill("#password", password)
    if remember:
        page.check("input[name=remember]")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name=f"Hello, {email}")).to_be_visible()


def test_sessions_flow_in_a_real_browser(browser: Any, server: ExampleServer) -> None:
    from playwright.sync_api import expect

    started = time.monotonic()
    base = server.url
    screens = Screens(SCREENSHOTS)
    print(f"\nscreenshots: {screens.folder}")
    member = _page(browser)

    # A visitor registers...
    response = member.goto(base + "/")
    assert response is not None and response.status == 200
    screens.take(member, "home")
    member.get_by_role("link", name="Create an account").click()
    member.fill("#email", MEMBER)
    member.fill("#password", MEMBER_PASSWORD)
    member.fill("#confirm", MEMBER_PASSWORD)
    screens.take(member, "register")
    member.get_by_role("button", name="Create account").click()
    expect(member).to_have_url(re.compile(re.escape(f"{base}/login?email=")))
    expect(member.get_by_text("Your account is ready")).to_be_visible()
    screens.take(member, "registered")

    # ...and logs in.
    member.fill("#password", MEMBER_PASSWORD)
    member.get_by_role("button", name="Log in").click()
    expect(member.get_by_role("heading", name=f"Hello, {MEMBER}")).to_be_visible()
    screens.take(member, "member-logged-in")

    # The member is refused the admin area and the reports.
    response = member.goto(base + "/admin/")
    assert response is not None and response.status == 403
    expect(member.get_by_text("You do not have the role")).to_be_visible()
    screens.take(member, "member-refused-admin")
    response = member.goto(base + "/reports")
    assert response is not None and response.status == 403

    # The admin, in another browser, grants the role that opens the reports.
    admin = _page(browser)
    _log_in(admin, base, ADMIN_EMAIL, ADMIN_PASSWORD)
    _nav(admin, "Admin").click()
    admin.get_by_role("link", name=MEMBER).click()
    admin.select_option("#grant-role", "analyst")
    admin.get_by_role("button", name="Grant role").click()
    expect(admin.get_by_text(f"Granted the role analyst to {MEMBER}")).to_be_visible()
    screens.take(admin, "admin-granted-analyst")

    # The member's next request sees the role: the reports open.
    response = member.goto(base + "/reports")
    assert response is not None and response.status == 200
    expect(member.get_by_role("heading", name="Reports")).to_be_visible()
    screens.take(member, "member-reports")

    # A second browser logs in as the same member.
    phone = _page(browser, user_agent=PHONE_USER_AGENT)
    _log_in(phone, base, MEMBER, MEMBER_PASSWORD, remember=True)
    screens.take(phone, "second-browser-logged-in")

    # The first browser lists both sessions, itself marked, and ends the other.
    _nav(member, "Your sessions").click()
    rows = member.locator("table.sessions tbody tr")
    expect(rows).to_have_count(2)
    expect(member.locator("table.sessions tr.current")).to_have_count(1)
    expect(member.locator("tr.current")).to_contain_text("this session")
    other = member.locator("table.sessions tbody tr:not(.current)")
    expect(other).to_contain_text("Chrome on Android")
    screens.take(member, "two-sessions")
    other.get_by_role("button", name="End this one").click()
    expect(member.get_by_text("That session is ended")).to_be_visible()
    expect(rows).to_have_count(1)
    expect(member.locator("table.sessions tr.current")).to_have_count(1)
    screens.take(member, "other-session-ended")

    # The other browser is logged out on its next request, remember-me or not.
    _nav(phone, "Your sessions").click()
    expect(phone).to_have_url(f"{base}/login?next=/account/sessions")
    expect(phone.get_by_text("Please log in to see that page.")).to_be_visible()
    expect(phone.get_by_role("button", name="Log out")).to_have_count(0)
    screens.take(phone, "second-browser-logged-out")

    # The first one is still in.
    member.reload()
    expect(member.get_by_role("heading", name="Your sessions")).to_be_visible()
    print(f"browser flow: {screens.count} screenshots in {time.monotonic() - started:.1f} s")
