"""The tokenizer of the filter language: it turns a filter string into a list of tokens.

The tokenizer only knows the lexical shape of the language (words, quoted keys, strings,
numbers, comparators, punctuation); what a word means is the parser's business. Every token
carries the 0-based character offsets of its first character and of the character after it,
so that every error, lexical or not, can point at the offending text.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NoReturn

from ..errors import InvalidFilterError

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Right after a '.', a key segment may start with a digit; the parser rejects it with a
# message about quoting rather than the tokenizer with one about numbers.
_KEY_SEGMENT = re.compile(r"[A-Za-z0-9_]+")
_GLUED = re.compile(r"[A-Za-z0-9_.]")


class TokenKind(enum.Enum):
    """What kind of lexeme a token is."""

    WORD = "word"  # an unquoted identifier or keyword: status, tags, AND, like
    QUOTED_IDENT = "quoted identifier"  # `anything`, with `` for a literal backtick
    STRING = "string"  # 'single' or "double" quoted; a double-quoted one may also be a key
    NUMBER = "number"  # 12, -1, +2.5, 1e3, .5
    OP = "comparator"  # = != < <= > >=
    LPAREN = "'('"
    RPAREN = "')'"
    COMMA = "','"
    DOT = "'.'"
    EOF = "end of filter"


@dataclass(frozen=True)
class Token:
    """One lexeme: its kind, the raw text, its decoded value and where it is.

    ``value`` is the unquoted, unescaped text for strings and quoted identifiers, the ``int``
    or ``float`` for numbers, and the raw text for everything else. ``quote`` is the quote
    character of a STRING or QUOTED_IDENT token and ``""`` otherwise.
    """

    kind: TokenKind
    text: str
    value: str | int | float
    pos: int
    end: int
    quote: str = ""

    def is_keyword(self, *words: str) -> bool:
        """True for an unquoted word equal, ignoring case, to one of ``words``."""
        return self.kind is TokenKind.WORD and str(self.value).upper() in words

    def describe(self) -> str:
        """A short human description for error messages, such as ``string 'abc'``."""
        if self.kind is TokenKind.EOF:
            return "the end of the filter"
        if self.kind in (TokenKind.LPAREN, TokenKind.RPAREN, TokenKind.COMMA, TokenKind.DOT):
            return self.kind.value
        text = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return f"{self.kind.value} {text}"


def _read_quoted(text: str, start: int, quote: str, backslash_escapes: bool) -> tuple[str, int]:
    """Decode the quoted run that opens at ``start``; return its value and the offset after it.

    A doubled quote stands for one quote character. With ``backslash_escapes``, ``\\<quote>``
    is a quote and ``\\\\`` a backslash; any other backslash is kept as it is, so that regular
    expressions such as ``'^v[0-9]+\\.[0-9]'`` mean what they say.
    """
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == quote:
            if i + 1 < n and text[i + 1] == quote:
                out.append(quote)
                i += 2
                continue
            return "".join(out), i + 1
        if backslash_escapes and ch == "\\" and i + 1 < n and text[i + 1] in (quote, "\\"):
            out.append(text[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1
    what = "backtick-quoted key" if quote == "`" else "string"
    raise InvalidFilterError(f"unterminated {what}: missing closing {quote}", start, text)


def _read_number(text: str, start: int) -> Token:
    match = _NUMBER.match(text, start)
    assert match is not None  # the caller saw a digit, or a sign or '.' before one
    end = match.end()
    raw = match.group()
    if end < len(text) and _GLUED.match(text, end):
        glued = re.match(r"[A-Za-z0-9_.+-]*", text[end:])
        bad = raw + (glued.group() if glued else "")
        raise InvalidFilterError(f"invalid number {bad!r}", start, text)
    value: int | float
    if any(c in raw for c in ".eE"):
        value = float(raw)
        if value in (float("inf"), float("-inf")):
            raise InvalidFilterError(f"number {raw} is out of range", start, text)
    else:
        value = int(raw)
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidFilterError(
                f"integer {raw} is out of range (it must fit in 64 bits)", start, text
            )
    return Token(TokenKind.NUMBER, raw, value, start, end)


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with an EOF token at ``len(text)``.

    Raises InvalidFilterError for an unterminated string or backtick-quoted key, a malformed
    number and any character the language does not use.
    """
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        prev = tokens[-1] if tokens else None
        glued_to_prev = prev is not None and prev.end == i
        if ch == ".":
            name_before = (
                glued_to_prev
                and prev is not None
                and (
                    prev.kind in (TokenKind.WORD, TokenKind.QUOTED_IDENT)
                    or (prev.kind is TokenKind.STRING and prev.quote == '"')
                )
            )
            if not name_before and i + 1 < n and text[i + 1].isdigit() and text[i + 1].isascii():
                tokens.append(_read_number(text, i))
                i = tokens[-1].end
                continue
            tokens.append(Token(TokenKind.DOT, ".", ".", i, i + 1))
            i += 1
            continue
        if glued_to_prev and prev is not None and prev.kind is TokenKind.DOT:
            segment = _KEY_SEGMENT.match(text, i)
            if segment is not None:
                tokens.append(
                    Token(TokenKind.WORD, segment.group(), segment.group(), i, segment.end())
                )
                i = segment.end()
                continue
        if ch == "_" or (ch.isascii() and ch.isalpha()):
            word = _WORD.match(text, i)
            assert word is not None
            tokens.append(Token(TokenKind.WORD, word.group(), word.group(), i, word.end()))
            i = word.end()
            continue
        if (ch.isascii() and ch.isdigit()) or (ch in "+-" and _NUMBER.match(text, i) is not None):
            tokens.append(_read_number(text, i))
            i = tokens[-1].end
            continue
        if ch in "'\"":
            value, end = _read_quoted(text, i, ch, backslash_escapes=True)
            tokens.append(Token(TokenKind.STRING, text[i:end], value, i, end, quote=ch))
            i = end
            continue
        if ch == "`":
            value, end = _read_quoted(text, i, "`", backslash_escapes=False)
            tokens.append(Token(TokenKind.QUOTED_IDENT, text[i:end], value, i, end, quote="`"))
            i = end
            continue
        two = text[i : i + 2]
        if two in ("!=", "<=", ">="):
            tokens.append(Token(TokenKind.OP, two, two, i, i + 2))
            i += 2
            continue
        if two == "<>":
            raise InvalidFilterError("comparator '<>' is not supported; use '!='", i, text)
        if ch in "=<>":
            tokens.append(Token(TokenKind.OP, ch, ch, i, i + 1))
            i += 1
            continue
        simple = {"(": TokenKind.LPAREN, ")": TokenKind.RPAREN, ",": TokenKind.COMMA}
        if ch in simple:
            tokens.append(Token(simple[ch], ch, ch, i, i + 1))
            i += 1
            continue
        hint = ""
        if prev is not None and glued_to_prev and prev.kind is TokenKind.WORD:
            hint = (
                "; quote keys that contain special characters with backticks, as in tags.`my-key`"
            )
        raise InvalidFilterError(f"unexpected character {ch!r}{hint}", i, text)
    tokens.append(Token(TokenKind.EOF, "", "", n, n))
    return tokens


class TokenStream:
    """The tokens of one text and a cursor over them, for the parsers to extend."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    def peek(self, ahead: int = 0) -> Token:
        """The token ``ahead`` places after the current one (EOF past the end)."""
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        """Consume and return the current token."""
        token = self.peek()
        if token.kind is not TokenKind.EOF:
            self.index += 1
        return token

    def error(self, message: str, position: int) -> NoReturn:
        """Raise InvalidFilterError at ``position`` of this stream's text."""
        raise InvalidFilterError(message, position, self.text)
