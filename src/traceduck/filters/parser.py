"""The recursive-descent parser of the filter language: tokens in, syntax tree out.

Grammar (keywords are case-insensitive; prefixes, attribute names and keys are not)::

    filter     := or_expr EOF
    or_expr    := and_expr ("OR" and_expr)*
    and_expr   := not_expr ("AND" not_expr)*
    not_expr   := "NOT" not_expr | primary
    primary    := "(" or_expr ")" | comparison
    comparison := field comparator [value | "(" value ("," value)* [","] ")"]
    field      := attribute | prefix "." key | "span" "." ("name" | "type" | "status")
                | "span" "." ("attributes" | "attribute") "." key
    key        := word ("." word)* | `backticked` | "double quoted"

The parser checks everything it can without data: that a field exists, that its comparator
fits it, that its value has the right type, and that an RLIKE pattern compiles. Every error is
an ``InvalidFilterError`` whose position is the offending token (or the end of the filter).
"""

from __future__ import annotations

from typing import NoReturn

from .ast import And, Comparison, Field, Node, Not, Or, Scalar, Value
from .fields import (
    EQUALITY_OPS,
    LIST_OPS,
    NULL_OPS,
    ORDER_OPS,
    allowed_ops,
    allowed_value_types,
)
from .identifiers import FieldReader
from .regex import regex_error
from .tokens import Token, TokenKind

MAX_DEPTH = 100
"""Deepest nesting of parentheses and NOTs a filter may have."""

_NOT_A_CLAUSE_START = frozenset({"AND", "OR", "IN", "LIKE", "ILIKE", "RLIKE", "IS", "NULL"})
_ASSESSMENT_KINDS = ("feedback", "expectation")


class Parser(FieldReader):
    """Parses one filter from its tokens; ``parse()`` reads the whole text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0

    # -- token helpers -------------------------------------------------------------------

    def _operator_word(self, *words: str) -> bool:
        """The current token is one of ``words`` used as an operator, not as a prefix.

        ``not.x`` starts a field (and fails as an unknown prefix); ``NOT x`` negates.
        """
        token, following = self.peek(), self.peek(1)
        if not token.is_keyword(*words):
            return False
        return not (following.kind is TokenKind.DOT and following.pos == token.end)

    def _starts_clause(self, token: Token) -> bool:
        if token.kind in (TokenKind.QUOTED_IDENT, TokenKind.LPAREN):
            return True
        return token.kind is TokenKind.WORD and str(token.value).upper() not in _NOT_A_CLAUSE_START

    def _enter(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.error(
                f"the filter nests parentheses and NOTs more than {MAX_DEPTH} levels deep",
                token.pos,
            )

    # -- boolean structure ---------------------------------------------------------------

    def parse(self) -> Node:
        """Read a whole filter; the text must hold at least one condition."""
        if self.peek().kind is TokenKind.EOF:
            self.error(
                "the filter is blank: expected a condition such as status = 'OK'", len(self.text)
            )
        node = self._or(after=None)
        token = self.peek()
        if token.kind is TokenKind.EOF:
            return node
        if token.kind is TokenKind.RPAREN:
            self.error("unbalanced ')': there is no '(' for it to close", token.pos)
        self._junk_after_condition(token)

    def _junk_after_condition(self, token: Token) -> NoReturn:
        if self._starts_clause(token):
            self.error("missing AND or OR between two conditions", token.pos)
        self.error(f"unexpected {token.describe()} after a complete condition", token.pos)

    def _or(self, after: Token | None) -> Node:
        items = [self._and(after)]
        while self._operator_word("OR"):
            op = self.advance()
            items.append(self._and(op))
        return items[0] if len(items) == 1 else Or(tuple(items), pos=items[0].pos)

    def _and(self, after: Token | None) -> Node:
        items = [self._not(after)]
        while self._operator_word("AND"):
            op = self.advance()
            items.append(self._not(op))
        return items[0] if len(items) == 1 else And(tuple(items), pos=items[0].pos)

    def _not(self, after: Token | None) -> Node:
        token = self.peek()
        if self._operator_word("NOT"):
            self.advance()
            self._enter(token)
            item = self._not(token)
            self.depth -= 1
            return Not(item, pos=token.pos)
        return self._primary(after)

    def _primary(self, after: Token | None) -> Node:
        token = self.peek()
        if token.kind is TokenKind.LPAREN:
            self.advance()
            self._enter(token)
            if self.peek().kind is TokenKind.RPAREN:
                self.error("empty parentheses: expected a condition inside", self.peek().pos)
            node = self._or(token)
            close = self.peek()
            if close.kind is TokenKind.EOF:
                self.error(f"missing ')' to close the '(' at position {token.pos}", close.pos)
            if close.kind is not TokenKind.RPAREN:
                self._junk_after_condition(close)
            self.advance()
            self.depth -= 1
            return node
        if token.kind in (TokenKind.WORD, TokenKind.QUOTED_IDENT) and not self._operator_word(
            "AND", "OR"
        ):
            return self._comparison()
        self._missing_condition(token, after)

    def _missing_condition(self, token: Token, after: Token | None) -> NoReturn:
        if self._operator_word("AND", "OR"):
            word = str(token.value).upper()
            if after is None:
                self.error(f"the filter cannot start with {word}: expected a condition", token.pos)
            if after.is_keyword("AND", "OR"):
                self.error(
                    f"{word} right after {str(after.value).upper()}: expected a condition",
                    token.pos,
                )
            self.error(f"expected a condition before {word}", token.pos)
        if token.kind is TokenKind.EOF:
            if after is not None and after.is_keyword("AND", "OR", "NOT"):
                word = str(after.value).upper()
                self.error(
                    f"dangling {word} at the end of the filter: expected a condition after it",
                    token.pos,
                )
            self.error("unexpected end of the filter: expected a condition", token.pos)
        if token.kind is TokenKind.RPAREN:
            self.error("unexpected ')': expected a condition", token.pos)
        self.error(
            f"expected a condition such as tags.env = 'prod', got {token.describe()}", token.pos
        )

    # -- comparisons ---------------------------------------------------------------------

    def _comparison(self) -> Comparison:
        target = self.field()
        op_token = self.peek()
        op = self._comparator(target)
        allowed = allowed_ops(target.kind, target.name)
        if op not in allowed:
            self.error(
                f"comparator {op} cannot be used with {target}; it takes {', '.join(allowed)}",
                op_token.pos,
            )
        value: Value
        if op in NULL_OPS:
            value = None
        elif op in LIST_OPS:
            value = self._value_list(target, op)
        else:
            value = self._scalar(target, op)[0]
        return Comparison(target, op, value, pos=target.pos)

    def _comparator(self, target: Field) -> str:
        token = self.peek()
        if token.kind is TokenKind.OP:
            self.advance()
            return str(token.value)
        if token.is_keyword("LIKE", "ILIKE", "RLIKE", "IN"):
            self.advance()
            return str(token.value).upper()
        if token.is_keyword("NOT"):
            self.advance()
            second = self.peek()
            if not second.is_keyword("IN"):
                self.error(f"expected IN after NOT, got {second.describe()}", second.pos)
            self.advance()
            return "NOT IN"
        if token.is_keyword("IS"):
            self.advance()
            second = self.peek()
            if second.is_keyword("NULL"):
                self.advance()
                return "IS NULL"
            if second.is_keyword("NOT") and self.peek(1).is_keyword("NULL"):
                self.advance()
                self.advance()
                return "IS NOT NULL"
            bad = self.peek(1) if second.is_keyword("NOT") else second
            self.error(f"expected NULL or NOT NULL after IS, got {bad.describe()}", bad.pos)
        self.error(
            f"missing comparator after {target}: expected one of "
            f"{', '.join(allowed_ops(target.kind, target.name))}, got {token.describe()}",
            token.pos,
        )

    def _scalar(self, target: Field, op: str) -> tuple[Scalar, str, int]:
        """Read one literal; return it, its type (``str`` / ``num``) and its position."""
        token = self.peek()
        value: Scalar
        if token.kind is TokenKind.STRING:
            value, vtype = str(token.value), "str"
        elif token.kind is TokenKind.NUMBER:
            assert isinstance(token.value, (int, float))
            value, vtype = token.value, "num"
        elif target.kind in _ASSESSMENT_KINDS and token.is_keyword("TRUE", "FALSE"):
            if op not in EQUALITY_OPS + LIST_OPS:
                self.error(
                    f"true and false can only be compared with =, !=, IN or NOT IN, not {op}",
                    token.pos,
                )
            value, vtype = str(token.value).lower(), "str"
        elif token.kind is TokenKind.QUOTED_IDENT:
            self.error("backticks quote keys; quote a string value with ' or \"", token.pos)
        elif token.kind is TokenKind.WORD and not token.is_keyword("AND", "OR", "NOT"):
            self.error(
                f"expected a value after {op}, got {token.describe()}; quote strings: 'value'",
                token.pos,
            )
        else:
            self.error(f"missing value after {op}: got {token.describe()}", token.pos)
        allowed = allowed_value_types(target.kind, target.name, op)
        if vtype not in allowed:
            if op in ORDER_OPS and vtype == "str":
                self.error(
                    f"{op} compares numbers: expected a number for {target}, got a string",
                    token.pos,
                )
            if vtype == "str":
                self.error(f"{target} is numeric: expected a number, got a string", token.pos)
            self.error(
                f"{target} takes strings: expected a quoted string, got the number {token.text}",
                token.pos,
            )
        if op == "RLIKE":
            assert isinstance(value, str)
            problem = regex_error(value)
            if problem is not None:
                self.error(f"invalid regular expression for RLIKE: {problem}", token.pos)
        self.advance()
        return value, vtype, token.pos

    def _value_list(self, target: Field, op: str) -> tuple[Scalar, ...]:
        opening = self.peek()
        if opening.kind is not TokenKind.LPAREN:
            self.error(
                f"expected '(' after {op}, as in {op} ('a', 'b'), got {opening.describe()}",
                opening.pos,
            )
        self.advance()
        if self.peek().kind is TokenKind.RPAREN:
            self.error(f"empty {op} list: give at least one value", self.peek().pos)
        values: list[Scalar] = []
        first_type = ""
        while True:
            value, vtype, pos = self._scalar(target, op)
            if first_type and vtype != first_type:
                self.error(f"the {op} list mixes strings and numbers", pos)
            first_type = vtype
            values.append(value)
            token = self.peek()
            if token.kind is TokenKind.COMMA:
                self.advance()
                token = self.peek()
                if token.kind is TokenKind.RPAREN:
                    break
                if token.kind is not TokenKind.EOF:
                    continue
            if token.kind is TokenKind.RPAREN:
                break
            if token.kind is TokenKind.EOF:
                self.error(
                    f"missing ')' to close the {op} list opened at position {opening.pos}",
                    token.pos,
                )
            self.error(f"expected ',' or ')' in the {op} list, got {token.describe()}", token.pos)
        self.advance()
        return tuple(values)


def parse_filter(text: str | None) -> Node | None:
    """Parse a filter string into its syntax tree; ``None`` or ``""`` mean no filter.

    Raises ``InvalidFilterError`` (with the 0-based position of the offending token) for any
    text that is not a valid filter, a whitespace-only one included, and ``TypeError`` for a
    value that is not a string.
    """
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise TypeError(f"a filter must be a string, not {type(text).__name__}")
    return Parser(text).parse()


__all__ = ["MAX_DEPTH", "Parser", "parse_filter"]
