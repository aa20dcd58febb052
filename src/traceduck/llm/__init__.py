"""LLM call capture: normalise OpenAI-style chat requests and responses into their stored form.

- :func:`normalize_chat` (``normalize.py``): the one normaliser, used by ``traceduck.openai`` and
  by the collector's ``POST /v1/chat/completions``;
- ``defaults.py``: the optional request parameters and their documented defaults;
- ``streaming.py``: the three stream forms, reassembled per choice;
- ``tokens.py``: token estimates when the provider reported none;
- ``pricing.py``: the price table (:func:`register_price`) and the cost of a call;
- ``record.py``: request/response attributes, tags and session as trace fields.
"""

from __future__ import annotations

from .normalize import ChatLog, normalize_chat
from .pricing import PRICES, Price, cost_usd, price_for, register_price
from .record import CallContext

__all__ = ["PRICES", "CallContext", "ChatLog", "Price", "cost_usd", "normalize_chat", "price_for", "register_price"]
