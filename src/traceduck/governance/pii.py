"""PII detection and redaction: small detectors with one protocol, and a registry to add yours.

A detector has a ``kind`` (``"EMAIL"``) and ``find(text)``, which yields the ``(start, end)``
of each match. The built-in ones: e-mail addresses, phone numbers, card numbers (Luhn-checked,
known networks), IP addresses (v4 and v6), IBANs (mod-97-checked), national-id-like numbers (US
SSN, UK NINO, Spanish DNI with its check letter) and secrets (API keys and tokens of the common
providers, JWTs, private keys, ``password=...``). :func:`register_pii_detector` adds one, which
runs before the built-ins: where two detectors match overlapping text the earlier one wins.

Redaction replaces each match with ``[REDACTED:<KIND>]``.
"""

from __future__ import annotations

import bisect
import importlib
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import orjson

from .detectors import BUILTIN_DETECTORS, MIN_CHARS, Hints, RegexDetector, Span, iban_valid, luhn_valid

__all__ = ["BUILTIN_DETECTORS", "PiiDetector", "PiiMatch", "detect", "iban_valid", "luhn_valid", "redact",
           "register_pii_detector"]  # fmt: skip


@runtime_checkable
class PiiDetector(Protocol):
    """Finds one kind of PII in text."""

    kind: str

    def find(self, text: str) -> Iterable[Span]: ...


@dataclass(frozen=True)
class PiiMatch:
    kind: str
    start: int
    end: int
    text: str


# -- the registry ----------------------------------------------------------------------------

_KIND = re.compile(r"^[A-Z][A-Z0-9_]{0,39}$")
_lock = threading.Lock()
_custom: list[PiiDetector] = []
#: Where the writer process can import each custom detector from (None: it cannot).
_refs: list[dict[str, str] | None] = []


class _FunctionDetector:
    """A plain function ``fn(text) -> iterable of (start, end) or of matched substrings``."""

    def __init__(self, kind: str, fn: Callable[[str], Iterable[Any]]) -> None:
        self.kind = kind
        self.fn = fn

    def find(self, text: str) -> Iterator[Span]:
        for item in self.fn(text) or ():
            if isinstance(item, str):
                start = 0
                while item and (start := text.find(item, start)) >= 0:
                    yield start, start + len(item)
                    start += len(item)
            else:
                start, end = item
                yield int(start), int(end)

    def __repr__(self) -> str:
        return f"FunctionDetector({self.kind!r}, {self.fn!r})"


def _reference(obj: Any) -> dict[str, str] | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return None
    return {"module": module, "qualname": qualname} if target is obj else None


def register_pii_detector(detector: Any, kind: str | None = None) -> PiiDetector:
    """Add a PII detector; it runs before the built-in ones.

    ``detector`` is an object with ``kind`` and ``find(text)`` (yielding ``(start, end)``), a
    class making one (instantiated without arguments), or a function ``fn(text)`` returning
    ``(start, end)`` pairs or the matched substrings (then ``kind`` is required). ``kind`` is an
    upper-case name such as ``"EMPLOYEE_ID"`` (redacted as ``[REDACTED:EMPLOYEE_ID]``).

    The default writer process imports detectors by name, so define yours at module level of an
    importable module (or ``configure(writer_process=False)``).
    """
    source = detector
    if isinstance(detector, type):
        detector = detector()
    if isinstance(detector, PiiDetector) and not (kind and kind != detector.kind):
        made: PiiDetector = detector
    elif callable(detector) and not isinstance(detector, PiiDetector):
        if kind is None:
            raise ValueError("a function detector needs kind=, e.g. register_pii_detector(fn, kind='EMPLOYEE_ID')")
        made = _FunctionDetector(kind, detector)
    else:
        raise TypeError("a PII detector is an object with kind and find(text), a class, or a function")
    if not isinstance(made.kind, str) or not _KIND.match(made.kind):
        raise ValueError(f"PII kind {made.kind!r} must be upper-case letters, digits and '_' (e.g. 'EMPLOYEE_ID')")
    ref = _reference(source)
    if ref is None:
        from ..config import current_setup  # noqa: PLC0415

        setup = current_setup()
        if setup is not None and setup.settings.writer_process and not setup.settings.is_remote:
            raise ValueError(f"{source!r} cannot be imported by the writer process: define it at module level "
                             "of an importable module, or configure(writer_process=False)")  # fmt: skip
    else:
        ref = {**ref, "kind": made.kind, "style": "class" if isinstance(source, type) else
               "function" if isinstance(made, _FunctionDetector) else "object"}  # fmt: skip
    with _lock:
        _custom.append(made)
        _refs.append(ref)
    return made


def unregister_pii_detectors() -> None:
    """Forget every detector added with :func:`register_pii_detector` (tests, notebooks)."""
    with _lock:
        _custom.clear()
        _refs.clear()


def detectors() -> tuple[PiiDetector, ...]:
    """The active detectors, in priority order (custom first)."""
    return (*_custom, *BUILTIN_DETECTORS)


def portable_refs() -> list[dict[str, str]] | None:
    """How another process loads the custom detectors; None if one of them cannot be loaded."""
    if any(ref is None for ref in _refs):
        return None
    return [ref for ref in _refs if ref is not None]


def non_portable() -> list[str]:
    return [repr(det) for det, ref in zip(_custom, _refs) if ref is None]


def load_refs(refs: list[dict[str, str]], sys_path: list[str] | None = None) -> None:
    """In the writer process: register the detectors the application registered."""
    for entry in sys_path or []:
        if entry not in sys.path:
            sys.path.append(entry)
    unregister_pii_detectors()
    for ref in refs:
        target: Any = importlib.import_module(ref["module"])
        for part in ref["qualname"].split("."):
            target = getattr(target, part)
        register_pii_detector(target, kind=ref["kind"] if ref.get("style") == "function" else None)


# -- scanning --------------------------------------------------------------------------------


def detect(text: str, using: Iterable[PiiDetector] | None = None) -> list[PiiMatch]:
    """Every PII match in ``text``, in order; overlaps resolved by detector priority."""
    if not text or len(text) < MIN_CHARS:
        return []
    hints = Hints(text)
    taken: list[tuple[int, int, str]] = []
    for detector in using if using is not None else detectors():
        found = detector.find(text, hints) if isinstance(detector, RegexDetector) else detector.find(text)
        for start, end in found:
            if end > start and not any(start < e and s < end for s, e, _ in taken):
                taken.append((start, end, detector.kind))
    taken.sort()
    return [PiiMatch(kind, start, end, text[start:end]) for start, end, kind in taken]


def redact(text: str, using: Iterable[PiiDetector] | None = None) -> str:
    """``text`` with each match replaced by ``[REDACTED:<KIND>]``."""
    return scan(text, True, using)[0]


def scan(text: str, replace: bool, using: Iterable[PiiDetector] | None = None) -> tuple[str, set[str]]:
    """(the text, redacted if ``replace``; the kinds found)."""
    matches = detect(text, using)
    if not matches:
        return text, set()
    kinds = {m.kind for m in matches}
    return (_replaced(text, matches) if replace else text), kinds


def _replaced(text: str, matches: list[PiiMatch]) -> str:
    """``text`` with each match (in order, not overlapping) replaced by ``[REDACTED:<KIND>]``."""
    parts: list[str] = []
    last = 0
    for m in matches:
        parts += [text[last : m.start], f"[REDACTED:{m.kind}]"]
        last = m.end
    parts.append(text[last:])
    return "".join(parts)


def scan_value(value: Any, replace: bool, kinds: set[str]) -> Any:
    """A JSON value with every string in it scanned (redacted if ``replace``); keys are kept.
    Returns ``value`` itself when nothing in it was redacted."""
    if isinstance(value, str):
        if len(value) < MIN_CHARS:
            return value
        out, found = scan(value, replace)
        kinds |= found
        return out
    if isinstance(value, dict):
        items = {k: scan_value(v, replace, kinds) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    if isinstance(value, list):
        seq = [scan_value(v, replace, kinds) for v in value]
        return value if all(a is b for a, b in zip(seq, value)) else seq
    return value


_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|.)", re.DOTALL)


def _blank(match: re.Match[str]) -> str:
    return " " * len(match.group())


def scan_json_text(text: str | None, replace: bool, kinds: set[str]) -> str | None:
    """JSON text with the strings inside scanned (redacted if ``replace``).

    The text is scanned as it is, its escapes blanked so positions stay put; each match must
    lie inside one JSON string, and then is replaced in place. Otherwise (a match across two
    strings, in a number, text that is not JSON), and whenever custom detectors are registered,
    the JSON is parsed and each string scanned.
    """
    if not text or len(text) < MIN_CHARS:
        return text
    if _custom:  # a detector of yours sees each string as it is, not JSON text
        return _scan_parsed(text, replace, kinds)
    view = _ESCAPE.sub(_blank, text) if "\\" in text else text
    matches = detect(view)
    if not matches:
        return text
    if any('"' in m.text or view.count('"', 0, m.start) % 2 == 0 for m in matches):
        return _scan_parsed(text, replace, kinds)
    kinds.update(m.kind for m in matches)
    return _replaced(text, matches) if replace else text


def _scan_parsed(text: str, replace: bool, kinds: set[str]) -> str:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        out, found = scan(text, replace)
        kinds |= found
        return out
    scanned = scan_value(value, replace, kinds)
    return text if scanned is value else orjson.dumps(scanned).decode()


def flagged(texts: list[str]) -> set[int]:
    """Indices of the ``texts`` (plain or JSON) that may hold PII, from ONE scan of them all:
    most spans have none, and then that scan is all they cost."""
    if _custom:
        return set(range(len(texts)))
    joined = "\x00".join(texts)  # a boundary no pattern with a check crosses
    if "\\" in joined:
        joined = _ESCAPE.sub(_blank, joined)  # (same length: offsets still hold)
    matches = detect(joined)
    if not matches:
        return set()
    ends, at = [], 0
    for text in texts:
        at += len(text)
        ends.append(at)
        at += 1
    return {bisect.bisect_left(ends, pos) for m in matches for pos in (m.start, m.end - 1)}


def scan_text(text: str | None, replace: bool, kinds: set[str]) -> str | None:
    if not text:
        return text
    out, found = scan(text, replace)
    kinds |= found
    return out
