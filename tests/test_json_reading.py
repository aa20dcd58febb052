"""Stored JSON reads back as the standard library reads it, through the fast path or not.

``serialize.loads`` parses with orjson and falls back to ``json`` where orjson refuses the text
or would read it differently (an integer beyond 64 bits becomes a float in orjson).
"""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

import traceduck
from traceduck.serialize import loads

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()  # includes lone surrogates
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


def _same(a: object, b: object) -> bool:
    """Equal, with NaN equal to NaN and the types of numbers compared too."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=300, deadline=None)
@given(_values, st.booleans())
def test_loads_reads_what_json_reads(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert _same(loads(text), json.loads(text))


def test_loads_raises_what_json_raises():
    for text in ("{bad", "", "[1,]", "'x'"):
        try:
            json.loads(text)
        except ValueError as expected:
            try:
                loads(text)
            except ValueError as got:
                assert type(got) is type(expected)
            else:
                raise AssertionError(f"loads({text!r}) did not raise")


def test_a_huge_integer_attribute_reads_back_as_that_integer(store_path):
    traceduck.configure(store=store_path)
    with traceduck.start_span("big", attributes={"note": "x"}) as span:
        span.set_inputs({"n": 2**70, "m": -(2**64), "f": 1.5})
        trace_id = traceduck.get_current_trace_id()
    traceduck.flush()
    stored = traceduck.get_trace(trace_id).data.spans[0].inputs
    assert stored == {"n": 2**70, "m": -(2**64), "f": 1.5}
    assert type(stored["n"]) is int
