"""The dashboard end to end: Debian's Chromium driven by Playwright against a real collector.

The collector runs on 127.0.0.1 with seeded data (OTLP ingest, ``/v1/chat/completions``,
``/api/feedback``); the browser sees only what the page fetches from it. Assertions use
Playwright's auto-waiting ``expect``; nothing is timed.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from _collector import Collector, create_key
from _dashboard_data import seed

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
KEY_STORAGE = "traceduck.apiKey"

expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("dashboard-browser")
    store = str(base / "store.duckdb")
    admin = create_key(store, "shop", "read,write,admin")
    empty = create_key(store, "empty", "read")
    collector = Collector(store, str(base / "collector.log"))
    try:
        seeded = seed(collector.client(admin.key), "shop")
        yield {"collector": collector, "key": admin, "empty_key": empty, "seeded": seeded,
               "api": collector.client(admin.key)}  # fmt: skip
    finally:
        collector.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


def _page(browser, env, key: str | None) -> Page:
    context = browser.new_context(viewport={"width": 1366, "height": 850}, base_url=env["collector"].base_url)
    if key is not None:
        context.add_init_script(f"localStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(key)})")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    return page


@pytest.fixture
def page(browser, env):
    page = _page(browser, env, env["key"].key)
    yield page
    assert page.errors == [], page.errors  # type: ignore[attr-defined]
    page.context.close()


def settled(page: Page) -> None:
    """Wait until the view of the current URL has rendered (not the one before it)."""
    page.wait_for_function("() => { const v = document.querySelector('.view[data-ready]');"
                           " return v !== null && v.dataset.hash === location.hash; }")


def open_view(page: Page, hash_: str) -> None:
    page.goto("/" + hash_)
    settled(page)


def rows(page: Page):
    return page.locator("#trace-table tbody tr")


def apply_filter(page: Page, text: str) -> None:
    page.fill("#filter-input", text)
    page.press("#filter-input", "Enter")
    expect(page).to_have_url(re.compile("filter="))
    settled(page)


# -- the key ---------------------------------------------------------------------------------------


def test_without_a_key_the_page_asks_for_one_and_the_dialog_unlocks_it(browser, env):
    page = _page(browser, env, None)
    page.goto("/")
    expect(page.get_by_role("heading", name="Enter an API key")).to_be_visible()
    page.get_by_role("button", name="Enter API key").click()
    page.get_by_label("Key", exact=True).fill(env["key"].key)
    page.get_by_role("button", name="Save key").click()
    expect(rows(page)).to_have_count(len(env["seeded"].traces))
    expect(page.locator("#match-count")).to_have_text(str(len(env["seeded"].traces)))
    expect(page.locator("#who")).to_contain_text("shop")
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()


def test_a_project_without_traces_says_how_to_send_them(browser, env):
    page = _page(browser, env, env["empty_key"].key)
    open_view(page, "#/traces?range=all")
    expect(page.get_by_role("heading", name="No traces yet")).to_be_visible()
    expect(page.locator(".empty")).to_contain_text("traceduck.configure(")
    expect(page.get_by_role("link", name="Settings")).to_be_hidden()  # a read key: no admin pages
    page.context.close()


# -- filter ----------------------------------------------------------------------------------------


def test_filter_narrows_the_list(page, env):
    alice = [t for t in env["seeded"].traces if t.user == "alice"]
    open_view(page, "#/traces")
    apply_filter(page, "tags.`trace.user` = 'alice'")
    expect(rows(page)).to_have_count(len(alice))
    expect(page.locator("#match-count")).to_have_text(str(len(alice)))
    expect(page.locator("#trace-table tbody tr td:nth-child(5)")).to_have_text(["alice"] * len(alice))
    assert "filter=" in page.url


def test_malformed_filter_shows_the_message_and_a_caret_under_the_position(page):
    open_view(page, "#/traces")
    apply_filter(page, "tags.task = 'chat' tags.tier = 'pro'")
    error = page.locator("#filter-error")
    expect(error).to_contain_text("Invalid filter at position 19: missing AND or OR between two conditions")
    expect(error.locator(".caret-mark")).to_have_text(" " * 19 + "^")
    expect(page.locator("#filter-input")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("heading", name="Fix the filter to see traces")).to_be_visible()


def test_clicking_a_user_and_a_tag_adds_them_to_the_filter(page, env):
    traces = env["seeded"].traces
    open_view(page, "#/traces?range=all")
    page.get_by_role("button", name="Filter by user bob").first.click()
    expect(page.locator("#filter-input")).to_have_value("tags.`trace.user` = 'bob'")
    expect(rows(page)).to_have_count(sum(t.user == "bob" for t in traces))
    page.get_by_role("button", name="Filter by tag task = translate").first.click()
    expect(page.locator("#filter-input")).to_have_value("tags.`trace.user` = 'bob' AND tags.`task` = 'translate'")
    expect(rows(page)).to_have_count(sum(t.user == "bob" and t.task == "translate" for t in traces))


def test_no_match_explains_what_to_do(page):
    open_view(page, "#/traces?range=1h&filter=" + quote("tags.task = 'no-such-task'"))
    expect(page.get_by_role("heading", name="No traces match")).to_be_visible()
    page.get_by_role("button", name="Clear the filter").click()
    expect(page.locator("#filter-input")).to_have_value("")


# -- pivot -----------------------------------------------------------------------------------------


def test_pivot_groups_traces_and_drills_down_to_the_list(page, env):
    traces = env["seeded"].traces
    open_view(page, "#/pivot?range=all&group_by=user")
    table = page.locator("#pivot-table")
    alice = table.locator("tbody tr", has=page.get_by_role("link", name="alice", exact=True))
    expect(alice.locator("td").first).to_have_text(str(sum(t.user == "alice" for t in traces)))
    expect(table.locator("tfoot td").first).to_have_text(str(len(traces)))
    expect(page.locator("svg.chart")).to_have_attribute("aria-label", re.compile(rf"{len(traces)} in all"))
    page.select_option("#group-by", "environment")
    staging = sum(t.environment == "staging" for t in traces)
    link = page.locator("#pivot-table").get_by_role("link", name="staging", exact=True)
    expect(link).to_be_visible()
    link.click()
    expect(page.locator("#filter-input")).to_have_value("tags.`trace.environment` = 'staging'")
    expect(rows(page)).to_have_count(staging)


def test_pivot_by_a_tag_key_lists_its_values(page, env):
    traces = env["seeded"].traces
    open_view(page, "#/pivot?range=all")
    page.select_option("#group-by", "tags.task")
    for task in ("chat", "summarize", "translate", "qa"):
        row = page.locator("#pivot-table tbody tr", has=page.get_by_role("link", name=task, exact=True))
        expect(row.locator("td").first).to_have_text(str(sum(t.task == task for t in traces)))


# -- trace detail ----------------------------------------------------------------------------------


def test_trace_shows_the_conversation_with_every_choice_and_the_selected_one_marked(page, env):
    open_view(page, f"#/trace/{env['seeded'].n_choices_trace}")
    conversation = page.get_by_role("region", name="Conversation")
    expect(conversation).to_contain_text("Where was the 2020 World Series played?")
    choices = conversation.locator("ol.choices > li")
    expect(choices).to_have_count(3)
    expect(conversation.locator("li.choice.selected")).to_have_count(1)
    expect(conversation.locator("li.choice.selected")).to_have_attribute("data-choice-index", "1")
    expect(conversation.locator("li.choice.selected")).to_contain_text("✓ selected")
    expect(conversation.locator("li.choice.selected")).to_contain_text("Arlington, Texas")


def test_trace_shows_the_span_tree_timeline_and_typed_metadata_links(page, env):
    first = env["seeded"].traces[0]  # an OTLP trace with a runbook url in its metadata
    open_view(page, f"#/trace/{first.trace_id}")
    tree = page.get_by_role("listbox", name="Span tree with timeline")
    expect(tree.get_by_role("option")).to_have_count(4)
    expect(tree.locator(".span-name")).to_have_text(["handle_request", "retrieve_docs", f"chat {first.model}", "format_answer"])
    expect(tree.locator(".timeline .bar")).to_have_count(4)
    expect(tree.get_by_role("option", selected=True)).to_contain_text(f"chat {first.model}")  # the LLM call
    link = page.locator("#metadata-table").get_by_role("link", name="Runbook #0")
    expect(link).to_have_attribute("href", "https://runbooks.example.com/support/0")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    tree.get_by_role("option").first.click()
    expect(page.locator("#span-detail h2")).to_contain_text("handle_request")
    expect(page.locator("#span-detail")).to_contain_text('"question"')


# -- curation --------------------------------------------------------------------------------------


def test_tag_several_traces_at_once_then_remove_one_tag_on_one_trace(page, env):
    dan = [t for t in env["seeded"].traces if t.user == "dan"]
    open_view(page, "#/traces?range=all&filter=" + quote("tags.`trace.user` = 'dan'"))
    expect(rows(page)).to_have_count(len(dan))
    page.get_by_label("Select all traces on this page").check()
    expect(page.locator("#selection-count")).to_have_text(f"{len(dan)} selected")
    page.fill("#bulk-key", "reviewed")
    page.fill("#bulk-value", "yes")
    page.get_by_role("button", name="Add tag").click()
    expect(page.locator("#toast")).to_have_text(f"Tagged {len(dan)} traces (reviewed).")
    apply_filter(page, "tags.reviewed = 'yes'")
    expect(rows(page)).to_have_count(len(dan))
    count = env["api"].get("/api/trace_count", params={"filter": "tags.reviewed = 'yes'"}).json()["count"]
    assert count == len(dan)

    rows(page).first.locator("td.name").click()  # a row opens its trace (its buttons filter)
    chip = page.locator("#trace-tags li[data-tag=reviewed]")
    expect(chip).to_contain_text("reviewed = yes")
    page.get_by_role("button", name="Remove tag reviewed").click()
    expect(chip).to_have_count(0)
    count = env["api"].get("/api/trace_count", params={"filter": "tags.reviewed = 'yes'"}).json()["count"]
    assert count == len(dan) - 1


def test_log_feedback_from_the_trace_page(page, env):
    trace = env["seeded"].traces[10]
    open_view(page, f"#/trace/{trace.trace_id}")
    page.fill("#feedback-name", "helpful")
    page.get_by_role("button", name="false", exact=True).click()
    page.fill("#feedback-rationale", "Answers a different question.")
    page.get_by_role("button", name="Log feedback").click()
    row = page.locator("#assessments-table tbody tr", has_text="helpful")
    expect(row).to_contain_text("false")
    expect(row).to_contain_text(f"HUMAN · key:{env['key'].key_id}")
    expect(row).to_contain_text("Answers a different question.")
    stored = env["api"].get(f"/api/traces/{trace.trace_id}").json()["info"]["assessments"]
    assert [(a["name"], a["value"], a["rationale"]) for a in stored] == [("helpful", False, "Answers a different question.")]
    open_view(page, "#/traces?range=all&filter=" + quote("feedback.helpful = 'false'"))
    expect(rows(page)).to_have_count(1)


def test_selected_traces_export_as_sft_jsonl(page, env):
    open_view(page, f"#/trace/{env['seeded'].n_choices_trace}")
    with page.expect_download() as download:
        page.get_by_role("button", name="Add to SFT export").click()
    lines = [json.loads(line) for line in open(download.value.path()) if line.strip()]
    assert len(lines) == 1
    messages = lines[0]["messages"]
    assert messages[-1] == {"role": "assistant", "content": "The 2020 World Series was played at Globe Life Field in Arlington, Texas."}
    expect(page.locator("#toast")).to_contain_text("Exported 1 example")


# -- sessions, keyboard ------------------------------------------------------------------------------


def test_session_view_lists_its_traces_in_order_with_totals(page, env):
    traces = sorted((t for t in env["seeded"].traces if t.session == "sess-1"), key=lambda t: t.start_ms)
    open_view(page, "#/session/sess-1")
    items = page.locator("#session-traces > li")
    expect(items).to_have_count(len(traces))
    expect(page.locator("#session-totals")).to_contain_text(f"Traces{len(traces)}")
    expect(items.first.get_by_role("link")).to_have_attribute("href", f"#/trace/{traces[0].trace_id}")
    tokens_in = sum(t.input_tokens for t in traces)
    expect(page.locator("#session-totals")).to_contain_text(f"{tokens_in:,} / ")


def test_keyboard_moves_selects_and_opens_traces(page):
    open_view(page, "#/traces?range=all")
    page.keyboard.press("/")
    expect(page.locator("#filter-input")).to_be_focused()
    first, second = rows(page).nth(0), rows(page).nth(1)
    first.focus()
    page.keyboard.press("ArrowDown")
    expect(second).to_be_focused()
    page.keyboard.press(" ")
    expect(second.locator("input.row-check")).to_be_checked()
    expect(page.locator("#selection-count")).to_have_text("1 selected")
    trace_id = second.get_attribute("data-trace-id")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"#/trace/{trace_id}$"))
    tree = page.get_by_role("listbox", name="Span tree with timeline")
    selected = tree.get_by_role("option", selected=True)
    expect(selected).to_be_visible()
    selected.focus()
    page.keyboard.press("Home")
    expect(tree.get_by_role("option").first).to_have_attribute("aria-selected", "true")
    expect(tree.get_by_role("option").first).to_be_focused()


# -- settings and the audit log (last: they change the project's settings) ------------------------


def test_a_settings_change_appears_in_the_audit_log(page, env):
    open_view(page, "#/settings")
    expect(page.get_by_label("Prompts (span inputs, request messages)")).to_be_checked()
    page.get_by_label("Detect").check()
    page.select_option("#retention", "90")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#settings-status")).to_have_text("Saved. The change is in the audit log.")
    expect(page.get_by_label("Detect")).to_be_checked()
    settings = env["api"].get("/api/projects/shop/settings").json()
    assert (settings["pii"], settings["retention_days"]) == ("detect", 90)

    page.get_by_role("link", name="Audit log").first.click()
    table = page.locator("#audit-table")
    pii = table.locator("tbody tr", has_text="pii_mode.changed")
    expect(pii).to_have_count(1)
    expect(pii).to_contain_text(f"key:{env['key'].key_id}")
    expect(pii).to_contain_text("off → detect")
    expect(table.locator("tbody tr", has_text="retention.changed")).to_contain_text("null → 90")
    page.get_by_role("button", name="Verify the chain").click()
    expect(page.locator("#audit-verify")).to_contain_text("Chain intact")
