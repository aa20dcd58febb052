"""PII detection and redaction: a corpus of positive and negative examples per built-in detector,
pluggable detectors, and redaction/detection on the way into a real DuckDB file (read directly).
"""

from __future__ import annotations

import pytest

import traceduck as td
from traceduck.governance import pii
from traceduck.governance.pii import BUILTIN_DETECTORS, detect, iban_valid, luhn_valid, redact

from conftest import query_file

#: kind -> (texts containing exactly that PII, texts that must not be taken for it)
CORPUS: dict[str, tuple[list[str], list[str]]] = {
    "EMAIL": (
        ["write to jane.doe@example.com today", "x+tag@mail.example.co.uk", "Contact: ADMIN@Example.ORG.",
         "<bob_smith99@sub.domain.io>"],
        ["user@localhost", "an @ sign alone", "email me at example dot com", "name@", "@handle on social",
         "version 1.2@beta"],
    ),
    "PHONE": (
        ["call +1 415 555 2671 now", "(415) 555-2671", "+44 20 7946 0958", "tel 030-1234-5678", "+4915123456789",
         "06 12 34 56 78"],
        ["order 12345 shipped", "the year 2024", "on 2024-01-15", "ip 192.168.1.10", "ts 1700000000000",
         "v1.2.3", "pi is 3.14159"],
    ),
    "CARD": (
        ["visa 4111 1111 1111 1111", "mc 5555-5555-5555-4444", "amex 378282246310005", "card:4012888888881881",
         "discover 6011 1111 1111 1117"],
        ["4111 1111 1111 1112", "1234 5678 9012 3456", "0000 0000 0000 0000", "id 79927398713",
         "serial 9111111111111111"],
    ),
    "IP": (
        ["from 192.168.1.10 at", "dns 8.8.8.8", "v6 2001:db8::8a2e:370:7334", "host 2001:db8::1",
         "peer fe80::1ff:fe23:4567:890a"],
        ["version 1.2.3", "loopback ::1 is no one's", "999.1.1.1", "time 12:30:45", "std::vector<int>", "ratio 1.5.2", "C::D"],
    ),
    "IBAN": (
        ["GB82 WEST 1234 5698 7654 32", "pay DE89370400440532013000 now", "FR1420041010050500013M02606",
         "NL91 ABNA 0417 1643 00"],
        ["GB82 WEST 1234 5698 7654 33", "DE00370400440532013000", "XX12 3456 7890", "ISBN 978-3-16-148410-0"],
    ),
    "NATIONAL_ID": (
        ["ssn 123-45-6789", "SSN: 078 05 1120", "NINO AB 12 34 56 C", "JG103759A", "DNI 12345678Z"],
        ["000-12-3456", "666-45-6789", "123-00-6789", "12345678A", "BG123456A", "phone 555-1234"],
    ),
    "SECRET": (
        ["key sk-proj-abcdefghijklmnopqrstuvwx1234", "AKIAIOSFODNN7EXAMPLE", "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
         "Authorization: Bearer abcdefghijklmnop1234", "password=hunter2hunter2",
         "xoxb-1234567890-abcdefghij", "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTYifQ.abcdefghijkl",
         "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----",
         "td_0123456789ab_abcdefghijklmnopqrstuvwxyz"],
        ["sk-short", "a skeleton key", "password: ", "the token was accepted", "Bearer of bad news",
         "-----BEGIN PUBLIC KEY-----"],
    ),
}


def _only(kind: str) -> list[pii.PiiDetector]:
    return [d for d in BUILTIN_DETECTORS if d.kind == kind]


@pytest.fixture(autouse=True)
def _no_custom_detectors():
    yield
    pii.unregister_pii_detectors()


@pytest.mark.parametrize("kind, text", [(k, t) for k, (pos, _) in CORPUS.items() for t in pos])
def test_detector_finds_its_positive_examples(kind, text):
    assert [m.kind for m in detect(text)] == [kind], detect(text)


@pytest.mark.parametrize("kind, text", [(k, t) for k, (_, neg) in CORPUS.items() for t in neg])
def test_detector_ignores_its_negative_examples(kind, text):
    assert detect(text, using=_only(kind)) == []


def test_luhn_check():
    assert luhn_valid("79927398713") and luhn_valid("4111 1111 1111 1111")
    assert not luhn_valid("79927398710") and not luhn_valid("1")


def test_iban_check_uses_mod_97_and_the_country_length():
    assert iban_valid("GB82WEST12345698765432")
    assert not iban_valid("GB82WEST12345698765433")  # check digits wrong
    assert not iban_valid("GB82WEST1234569876543")  # one character short for GB


def test_redact_replaces_each_match_with_its_kind():
    text = "mail jane@example.com or call +1 415 555 2671 from 10.0.0.1"
    assert redact(text) == "mail [REDACTED:EMAIL] or call [REDACTED:PHONE] from [REDACTED:IP]"


def test_a_card_number_is_not_also_taken_for_a_phone_number():
    assert [m.kind for m in detect("pay with 4111 1111 1111 1111 please")] == ["CARD"]


def test_registered_function_detector_is_used_and_wins_overlaps():
    pii.register_pii_detector(lambda text: [w for w in text.split() if w.startswith("EMP-")], kind="EMPLOYEE_ID")
    assert redact("ticket by EMP-0042 today") == "ticket by [REDACTED:EMPLOYEE_ID] today"


class _OrderNumbers:
    kind = "ORDER"

    def find(self, text):
        start = text.find("ORD#")
        if start >= 0:
            yield start, start + 10


def test_registered_class_detector_is_used():
    pii.register_pii_detector(_OrderNumbers)
    assert redact("your ORD#123456 shipped") == "your [REDACTED:ORDER] shipped"


def test_registering_a_bad_detector_says_what_is_wrong():
    with pytest.raises(ValueError, match="kind="):
        pii.register_pii_detector(lambda text: [])
    with pytest.raises(ValueError, match="upper-case"):
        pii.register_pii_detector(lambda text: [], kind="lower")
    with pytest.raises(TypeError):
        pii.register_pii_detector(42)


# -- on the way into the store -------------------------------------------------------------------

EMAIL, PHONE, CARD = "alice.smith@example.com", "+1 415 555 2671", "4111 1111 1111 1111"
SECRET, IP = "sk-proj-abcdefghijklmnopqrstuvwx1234", "203.0.113.7"


def _record_pii_trace() -> None:
    @td.trace(span_type="CHAIN")
    def handle(question: str) -> str:
        td.update_current_trace(metadata={"note": f"card {CARD}"}, tags={"contact": EMAIL})
        with td.start_span(f"lookup {IP}", span_type="TOOL", attributes={"api.key": SECRET}) as span:
            span.set_inputs({"q": question})
            span.add_event("retry", {"reason": f"mail {EMAIL}"})
        return f"call me at {PHONE}"

    handle(f"my email is {EMAIL}")
    assert td.flush()


def _file_text(path: str) -> str:
    rows = query_file(path, "SELECT * FROM spans") + query_file(path, "SELECT * FROM traces")
    return repr(rows)


def test_redact_mode_replaces_pii_before_it_is_stored(store_path, provider):
    td.configure(store_path, tracer_provider=provider, pii="redact")
    _record_pii_trace()
    text = _file_text(store_path)
    for raw in (EMAIL, PHONE, CARD, SECRET, IP):
        assert raw not in text, f"{raw} reached the file"
    for kind in ("EMAIL", "PHONE", "CARD", "SECRET", "IP"):
        assert f"[REDACTED:{kind}]" in text
    tags = query_file(store_path, "SELECT tags['pii.detected'] FROM traces")
    assert tags == [("CARD,EMAIL,IP,PHONE,SECRET",)]


def test_detect_mode_tags_the_trace_and_keeps_the_text(store_path, provider):
    td.configure(store_path, tracer_provider=provider, pii="detect")
    _record_pii_trace()
    found = td.search_traces("tags.`pii.detected` LIKE '%EMAIL%'", return_type="list")
    assert len(found) == 1 and found[0].info.tags["pii.detected"] == "CARD,EMAIL,IP,PHONE,SECRET"
    text = _file_text(store_path)
    assert EMAIL in text and "[REDACTED" not in text


def test_pii_off_stores_the_text_untouched_and_untagged(store_path, provider):
    td.configure(store_path, tracer_provider=provider, pii="off")
    _record_pii_trace()
    assert EMAIL in _file_text(store_path)
    assert query_file(store_path, "SELECT tags['pii.detected'] FROM traces") == [(None,)]


def test_the_tag_names_pii_of_spans_written_before_their_root(store_path, provider):
    td.configure(store_path, tracer_provider=provider, pii="detect")
    with td.start_span("root") as root:
        with td.start_span("child") as child:
            child.set_inputs({"mail": EMAIL})
        assert td.flush()  # the child is written in a batch of its own, before the root ends
        root.set_outputs(f"call {PHONE}")
    assert td.flush()
    assert query_file(store_path, "SELECT tags['pii.detected'] FROM traces") == [("EMAIL,PHONE",)]


def test_custom_detector_redacts_in_the_store(store_path, provider):
    pii.register_pii_detector(lambda text: [w for w in text.split() if w.startswith("EMP-")], kind="EMPLOYEE_ID")
    td.configure(store_path, tracer_provider=provider, pii="redact")
    with td.start_span("hr") as span:
        span.set_inputs({"who": "EMP-0042 asked"})
    assert td.flush()
    inputs = query_file(store_path, "SELECT inputs FROM spans")[0][0]
    assert "EMP-0042" not in inputs and "[REDACTED:EMPLOYEE_ID]" in inputs


def find_ticket_ids(text: str) -> list[str]:
    """A module-level detector: the writer process imports it by name."""
    return [w for w in text.split() if w.startswith("TICKET-")]


@pytest.mark.writer_process
def test_redaction_runs_in_the_writer_process_with_custom_detectors(store_path, provider):
    pii.register_pii_detector(find_ticket_ids, kind="TICKET")
    td.configure(store_path, tracer_provider=provider, pii="redact")
    assert td.settings().writer_process
    with td.start_span("support") as span:
        span.set_inputs({"text": f"TICKET-991 from {EMAIL}"})
    assert td.flush()
    inputs = query_file(store_path, "SELECT inputs FROM spans")[0][0]
    assert inputs == '{"text":"[REDACTED:TICKET] from [REDACTED:EMAIL]"}'


@pytest.mark.writer_process
def test_a_detector_the_writer_process_cannot_import_is_refused_at_configure(store_path, provider):
    pii.register_pii_detector(lambda text: [], kind="LOCAL_ONLY")
    with pytest.raises(ValueError, match="writer process"):
        td.configure(store_path, tracer_provider=provider, pii="redact")
