"""Opaque page tokens for keyset paging.

A token holds the sort-key values of the last row of a page and a fingerprint of the query it
belongs to. The next page is "rows that sort after those values", so traces stored meanwhile never
shift a page or repeat a row. The token is not signed: it carries no secret and every value in it
reaches SQL only as a bound parameter, after its type is checked.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from .errors import TraceduckError

TOKEN_VERSION = 1


class InvalidPageTokenError(TraceduckError, ValueError):
    """The page token is malformed or belongs to another query."""


def query_fingerprint(filter_string: str | None, order_by: Sequence[str] | None, project: str | None) -> str:
    text = json.dumps([filter_string or "", list(order_by or []), project or ""])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_token(values: Sequence[Any], fingerprint: str) -> str:
    raw = json.dumps({"v": TOKEN_VERSION, "k": list(values), "q": fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str, fingerprint: str, length: int) -> list[Any]:
    """The sort-key values in ``token``; raises :class:`InvalidPageTokenError` if unusable."""
    if not isinstance(token, str) or len(token) > 8192:
        raise InvalidPageTokenError("page_token is not a token returned by a search")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidPageTokenError("page_token is not a token returned by a search") from None
    if not isinstance(data, dict) or data.get("v") != TOKEN_VERSION:
        raise InvalidPageTokenError("page_token is not a token returned by a search")
    if data.get("q") != fingerprint:
        raise InvalidPageTokenError(
            "page_token belongs to a search with another filter, order or project; "
            "pass the same filter_string and order_by as the search that returned it"
        )
    values = data.get("k")
    if (
        not isinstance(values, list)
        or len(values) != length
        or not all(v is None or isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values)
    ):
        raise InvalidPageTokenError("page_token is not a token returned by a search")
    return values
