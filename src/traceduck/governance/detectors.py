"""The built-in PII detectors and what makes them cheap to run on every span.

Each is a regular expression plus a check of what it matched (Luhn for cards, mod-97 for IBANs,
valid addresses for IPs, ...), behind a *quick* test on :class:`Hints` that rules out most
text with substring tests, which run at memory speed where a regular expression does not.
``tests/test_pii.py`` holds a corpus of positive and negative examples for each.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator

Span = tuple[int, int]


class Hints:
    """Cheap facts about a text (computed once, on demand) that tell most detectors there is
    nothing to look for: a substring test runs at memory speed, a regular expression does not."""

    __slots__ = ("text", "_shape", "_squeezed", "_dotted", "_lower", "_hex")

    def __init__(self, text: str) -> None:
        self.text = text
        self._shape: bytes | None = None
        self._squeezed: bytes | None = None
        self._dotted: bytes | None = None
        self._lower: str | None = None
        self._hex: bytes | None = None

    def _bytes(self) -> bytes:
        return self.text.encode("utf-8", "surrogatepass")

    @property
    def shape(self) -> bytes:
        """Digits as ``9``, letters as ``A``/``a``, everything else as it is."""
        if self._shape is None:
            self._shape = self._bytes().translate(_SHAPE)
        return self._shape

    @property
    def squeezed(self) -> bytes:
        """The shape without the separators `` -.()+/`` (``+1 (415) 555-2671`` -> ``99999999999``)."""
        if self._squeezed is None:
            self._squeezed = self.shape.translate(None, b" -.()+/")
        return self._squeezed

    @property
    def dotted(self) -> bytes:
        """The shape with runs of digits shortened (``192.168.0.1`` -> ``9.9.9.9``)."""
        if self._dotted is None:
            self._dotted = self.shape.replace(b"999", b"9").replace(b"99", b"9")
        return self._dotted

    @property
    def hex(self) -> bytes:
        if self._hex is None:
            self._hex = self._bytes().translate(_HEX)
        return self._hex

    @property
    def lower(self) -> str:
        if self._lower is None:
            self._lower = self.text.lower()
        return self._lower


class RegexDetector:
    """Matches of ``pattern`` (its group ``v`` if it has one) that pass ``check``; ``quick``
    (given :class:`Hints`) is false for text that cannot contain a match."""

    def __init__(self, kind: str, pattern: str, check: Callable[[str], bool] | None = None,
                 quick: Callable[[Hints], bool] | None = None, flags: int = 0) -> None:  # fmt: skip
        self.kind = kind
        self.pattern = re.compile(pattern, flags)
        self.check = check
        self.quick = quick
        self._group = "v" if "v" in self.pattern.groupindex else 0

    def find(self, text: str, hints: Hints | None = None) -> Iterable[Span]:
        if self.quick is not None and not self.quick(hints if hints is not None else Hints(text)):
            return ()
        return self._matches(text)

    def _matches(self, text: str) -> Iterator[Span]:
        for match in self.pattern.finditer(text):
            group = self._group if self._group and match.group(self._group) is not None else 0
            if self.check is None or self.check(match.group(group)):
                yield match.span(group)

    def __repr__(self) -> str:
        return f"RegexDetector({self.kind!r})"


class AnchoredDetector(RegexDetector):
    """Tries ``pattern`` only where a word starting with one of ``anchors`` occurs (any case):
    a search for a few words is far cheaper than a case-insensitive pattern over all the text."""

    def __init__(self, kind: str, anchors: tuple[str, ...], pattern: str) -> None:
        super().__init__(kind, pattern, flags=re.IGNORECASE)
        self.anchors = anchors

    def find(self, text: str, hints: Hints | None = None) -> Iterable[Span]:
        lower = hints.lower if hints is not None else text.lower()
        spans: list[Span] = []
        for anchor in self.anchors:
            if anchor not in lower:
                continue
            at = lower.find(anchor)
            while at >= 0:
                before = lower[at - 1] if at else " "
                match = None if before.isalnum() or before == "_" else self.pattern.match(text, at)
                if match is not None:
                    spans.append(match.span(self._group))
                at = lower.find(anchor, at + 1)
        return sorted(spans)


_SHAPE = bytes(ord("9") if 48 <= b <= 57 else ord("A") if 65 <= b <= 90 else ord("a") if 97 <= b <= 122 else b
               for b in range(256))  # fmt: skip
#: Shape bytes of key and token characters (letters, digits, ``_``, ``-``) as ``w``.
_WORDS = bytes(ord("w") if chr(b) in "9Aa_-" else ord(" ") for b in range(256))
_HEX = bytes(ord("h") if chr(b) in "0123456789abcdefABCDEF" else b for b in range(256))


def _secret_hint(h: Hints) -> bool:
    t = h.text
    if "PRIVATE KEY" in t or "earer" in t or "EARER" in t:
        return True
    if b"wwwwwwwwwwwwww" not in h.shape.translate(_WORDS):  # every key or token is 14+ such characters
        return False
    return ("sk-" in t or "_live_" in t or "_test_" in t or "AKIA" in t or "ASIA" in t or "ghp_" in t
            or "gho_" in t or "ghu_" in t or "ghs_" in t or "ghr_" in t or "github_pat_" in t or "xox" in t
            or "AIza" in t or "td_" in t or "eyJ" in t)


# -- checks ------------------------------------------------------------------------------------


def luhn_valid(number: str) -> bool:
    """The Luhn checksum of a string of digits (separators ignored)."""
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 2:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _card(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    # Visa, Mastercard (51-55, 2221-2720), Amex, Diners, Discover, JCB, UnionPay, Maestro
    network = (digits[0] == "4" or 51 <= int(digits[:2]) <= 55 or 2221 <= int(digits[:4]) <= 2720
               or digits[:2] in ("34", "37", "36", "38", "35", "62", "65", "50")
               or digits[:4] == "6011" or 300 <= int(digits[:3]) <= 305 or 56 <= int(digits[:2]) <= 69)  # fmt: skip
    return network and luhn_valid(digits)


_DATE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")
_DOTTED_QUAD = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def _phone(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    if not 8 <= digits <= 15:
        return False
    if _DATE.match(text) or _DOTTED_QUAD.match(text):
        return False
    if text.startswith("+"):
        return True
    # Without a country code, ask for the separators people write phone numbers with.
    return any(c in text for c in " -().")


def _ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _ipv6(text: str) -> bool:
    if text.count(":") < 2 or sum(c not in ":." for c in text) < 3:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28, "CZ": 24,
    "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GI": 23, "GR": 27, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "KW": 30, "KZ": 20, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26, "UA": 29,
}  # fmt: skip


def iban_valid(text: str) -> bool:
    """Country length and the ISO 13616 mod-97 check of an IBAN (spaces ignored)."""
    iban = text.replace(" ", "").upper()
    expected = _IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    if not 15 <= len(iban) <= 34:
        return False
    number = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return int(number) % 97 == 1


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def _national_id(text: str) -> bool:
    compact = text.replace(" ", "").replace("-", "").upper()
    if len(compact) == 9 and compact[:8].isdigit() and compact[8].isalpha():  # Spanish DNI
        return _DNI_LETTERS[int(compact[:8]) % 23] == compact[8]
    if len(compact) == 9 and compact.isdigit():  # US SSN (written with separators)
        area, group, serial = compact[:3], compact[3:5], compact[5:]
        return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
    if len(compact) == 9:  # UK National Insurance number
        return compact[:2] not in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ")
    return False


_SECRET = (
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|td_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r")(?![A-Za-z0-9_-])"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|(?i:\bbearer\s+)(?P<v>[A-Za-z0-9._~+/-]{16,}=*)"
)
_ASSIGNED_SECRET = (
    r"(?:api[_-]?key|secret|access[_-]?token|auth[_-]?token|token|password|passwd|pwd)\b"
    r"[\"']?\s*[:=]\s*[\"']?(?P<v>[^\s\"',;]{8,})"
)

BUILTIN_DETECTORS: tuple[RegexDetector, ...] = (
    RegexDetector("SECRET", _SECRET, quick=_secret_hint),
    AnchoredDetector("SECRET", ("api", "secret", "access", "auth", "token", "passw", "pwd"), _ASSIGNED_SECRET),
    RegexDetector("EMAIL", r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                           r"\.[A-Za-z]{2,24}(?![\w-])", quick=lambda h: "@" in h.text),  # fmt: skip
    RegexDetector("IBAN", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", check=iban_valid,
                  quick=lambda h: b"AA99" in h.squeezed),  # fmt: skip
    RegexDetector("CARD", r"\d(?<![\d-]\d)(?:[ -]?\d){12,18}(?![\d-])", check=_card,
                  quick=lambda h: b"9999999999999" in h.squeezed),  # fmt: skip
    RegexDetector("NATIONAL_ID", r"(?<![\w-])(?:\d{3}[- ]\d{2}[- ]\d{4}|\d{8}[- ]?[A-Za-z]"
                                 r"|[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D])(?![\w-])",
                  check=_national_id, quick=lambda h: b"999999" in h.squeezed),  # fmt: skip
    RegexDetector("IP", r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]|\.\d)", check=_ipv4,
                  quick=lambda h: b"9.9.9.9" in h.dotted),  # fmt: skip
    RegexDetector("IP", r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])",
                  check=_ipv6, quick=lambda h: "::" in h.text or h.hex.count(b"h:h") >= 3),  # fmt: skip
    RegexDetector("PHONE", r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,5}){1,5}(?![\w-]|\.\d)"
                           r"|(?<![\w+])\+\d{8,15}(?!\w)", check=_phone, quick=lambda h: b"99999999" in h.squeezed),  # fmt: skip
)
#: No PII is shorter than this (``a@b.io``).
MIN_CHARS = 6
