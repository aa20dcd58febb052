"""Reading field names: a trace attribute, or a prefix, a '.' and a key.

Fields are the one part of the language shared by filters and ``order_by`` entries, so the
rules live here, on a token stream both parsers extend: prefixes and attribute names are
case-sensitive and resolved through their aliases, keys are dotted plain words or one quoted
run (backticks or double quotes), and identity key aliases are resolved to canonical keys.
"""

from __future__ import annotations

from .ast import Field
from .fields import (
    ATTRIBUTE_ALIASES,
    ATTRIBUTE_REDIRECTS,
    PREFIXES,
    SPAN_ATTRIBUTE_WORDS,
    SPAN_FIELDS,
    canonical_key,
)
from .tokens import Token, TokenKind, TokenStream

_KEY_START_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_PREFIX_LIST = "attributes, trace, tags, metadata, feedback, expectation or span"


class FieldReader(TokenStream):
    """A token stream that can read a field at its current token."""

    def field(self) -> Field:
        """Read a field: a bare trace attribute, or a prefix, a '.' and what follows it."""
        head = self.peek()
        if head.kind not in (TokenKind.WORD, TokenKind.QUOTED_IDENT):
            self.error(
                f"expected a field such as status or tags.<key>, got {head.describe()}", head.pos
            )
        self.advance()
        name = str(head.value)
        dot = self.peek()
        if dot.kind is not TokenKind.DOT:
            if name in PREFIXES:
                self.error(f"missing key after the prefix {name!r}: write {name}.<key>", dot.pos)
            return self._attribute(name, head.pos, head.pos)
        if dot.pos != head.end:
            self.error("unexpected space before '.'", head.end)
        if name not in PREFIXES:
            self.error(f"unknown prefix {_short(name)}: expected {_PREFIX_LIST}", head.pos)
        self.advance()
        kind = PREFIXES[name]
        if kind == "span":
            return self._span_field(head, dot)
        key, key_pos = self._key(dot, f"{name}.")
        if kind == "attribute":
            return self._attribute(key, key_pos, head.pos)
        return Field(kind, None, canonical_key(kind, key), pos=head.pos)  # type: ignore[arg-type]

    def _attribute(self, name: str, name_pos: int, field_pos: int) -> Field:
        if name in ATTRIBUTE_ALIASES:
            return Field("attribute", ATTRIBUTE_ALIASES[name], pos=field_pos)
        if name in ATTRIBUTE_REDIRECTS:
            kind, key = ATTRIBUTE_REDIRECTS[name]
            return Field(kind, None, key, pos=field_pos)  # type: ignore[arg-type]
        known = ", ".join(sorted(ATTRIBUTE_ALIASES))
        self.error(f"unknown trace attribute {_short(name)}: expected one of {known}", name_pos)

    def _span_field(self, head: Token, dot: Token) -> Field:
        token = self.peek()
        if token.kind not in (TokenKind.WORD, TokenKind.QUOTED_IDENT) or token.pos != dot.end:
            self.error(
                "missing span field after 'span.': expected name, type, status or attributes.<key>",
                token.pos,
            )
        self.advance()
        sub = str(token.value)
        following = self.peek()
        glued_dot = following.kind is TokenKind.DOT and following.pos == token.end
        if sub in SPAN_FIELDS:
            if glued_dot:
                self.error(f"span.{sub} takes no key", following.pos)
            return Field("span", sub, pos=head.pos)
        if sub in SPAN_ATTRIBUTE_WORDS:
            if not glued_dot:
                self.error(f"missing key after 'span.{sub}': write span.{sub}.<key>", following.pos)
            self.advance()
            key, _ = self._key(following, f"span.{sub}.")
            return Field("span", "attributes", key, pos=head.pos)
        self.error(
            f"unknown span field {_short(sub)}: expected name, type, status or attributes.<key>",
            token.pos,
        )

    def _key(self, dot: Token, prefix: str) -> tuple[str, int]:
        """Read the key after ``dot``: dotted plain words, or one backticked / double-quoted key."""
        token = self.peek()
        is_key = token.kind in (TokenKind.WORD, TokenKind.QUOTED_IDENT) or (
            token.kind is TokenKind.STRING and token.quote == '"'
        )
        if not is_key:
            hint = (
                "; quote keys with backticks or double quotes"
                if token.kind is TokenKind.STRING
                else ""
            )
            self.error(f"missing key after {prefix!r}{hint}", token.pos)
        if token.pos != dot.end:
            self.error("unexpected space after '.'", dot.end)
        self.advance()
        if token.kind is not TokenKind.WORD:
            key = str(token.value)
            if key == "":
                self.error("empty key: a key needs at least one character", token.pos)
            after = self.peek()
            if after.kind is TokenKind.DOT and after.pos == token.end:
                self.error(
                    "unexpected '.' after a quoted key: put the whole key inside the quotes",
                    after.pos,
                )
            return key, token.pos
        parts = [self._key_segment(token)]
        last = token
        while self.peek().kind is TokenKind.DOT and self.peek().pos == last.end:
            inner_dot = self.advance()
            segment = self.peek()
            if segment.kind is TokenKind.WORD and segment.pos == inner_dot.end:
                parts.append(self._key_segment(segment))
                last = self.advance()
                continue
            if (
                segment.kind in (TokenKind.QUOTED_IDENT, TokenKind.STRING)
                and segment.pos == inner_dot.end
            ):
                self.error("quote the whole key, not a part of it, as in tags.`a.b c`", segment.pos)
            self.error(
                "missing key part after '.'",
                segment.pos if segment.pos == inner_dot.end else inner_dot.end,
            )
        return ".".join(parts), token.pos

    def _key_segment(self, token: Token) -> str:
        text = str(token.value)
        if text[0] not in _KEY_START_CHARS:
            self.error(
                f"an unquoted key must start with a letter or '_': quote it, as in `{text}`",
                token.pos,
            )
        return text


def _short(name: str) -> str:
    """``name`` quoted for a message, cut to a readable length."""
    return repr(name if len(name) <= 40 else name[:37] + "...")
