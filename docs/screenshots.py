"""Screenshots of the dashboard's main views, for the README.

    python docs/screenshots.py [--out docs/screenshots]

Starts a collector on 127.0.0.1 with a fresh store and an admin key, seeds it the way the
dashboard tests do (OTLP traces, chat completions with n choices, feedback), changes a setting
through the page, and saves PNGs of the trace list, the pivot view, two trace details, a session,
the settings page and the audit log, taken with Debian's Chromium (``/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

from _collector import Collector, create_key  # noqa: E402
from _dashboard_data import seed  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
VIEWPORT = {"width": 1366, "height": 860}


def shoot(page: Page, hash_: str, path: Path, full_page: bool = False, before=None) -> None:  # noqa: ANN001
    page.goto("/" + hash_)
    expect(page.locator(".view[data-ready]")).to_be_visible(timeout=20_000)
    if before is not None:
        before(page)
    page.evaluate("document.getElementById('toast').className = 'toast'")
    page.mouse.move(0, 0)
    page.screenshot(path=str(path), full_page=full_page)
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="traceduck-screenshots-"))
    store = str(work / "store.duckdb")
    key = create_key(store, "support-bot", "read,write,admin")
    collector = Collector(store, str(work / "collector.log"))
    try:
        seeded = seed(collector.client(key.key), "support-bot", n=48, chats=3, feedback=8)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
            context = browser.new_context(viewport=VIEWPORT, base_url=collector.base_url, device_scale_factor=1)
            context.add_init_script(f"localStorage.setItem('traceduck.apiKey', {json.dumps(key.key)})")
            page = context.new_page()

            def select_some(page: Page) -> None:
                for i in (1, 2, 4):
                    page.locator("#trace-table tbody tr input.row-check").nth(i).check()

            shoot(page, "#/traces?range=24h", out / "traces.png", before=select_some)
            shoot(page, "#/pivot?range=24h&group_by=user", out / "pivot.png", full_page=True)
            first = seeded.traces[44].trace_id  # has a runbook link and a feedback
            shoot(page, f"#/trace/{first}", out / "trace.png", full_page=True)
            shoot(page, f"#/trace/{seeded.n_choices_trace}", out / "trace-choices.png")
            shoot(page, "#/session/sess-1", out / "session.png")

            def change_settings(page: Page) -> None:
                page.get_by_label("Detect").check()
                page.select_option("#retention", "90")
                page.get_by_label("Context: model routing").uncheck()
                page.get_by_role("button", name="Save settings").click()
                expect(page.locator("#settings-status")).to_have_text("Saved. The change is in the audit log.")

            shoot(page, "#/settings", out / "settings.png", before=change_settings)
            shoot(page, "#/audit", out / "audit.png",
                  before=lambda page: page.get_by_role("button", name="Verify the chain").click()
                  or expect(page.locator("#audit-verify")).to_contain_text("Chain intact"))  # fmt: skip
            browser.close()
    finally:
        collector.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
