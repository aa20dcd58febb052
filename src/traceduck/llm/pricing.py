"""What an LLM call cost: a price table per model that applications extend.

Prices are USD per 1 million tokens, split into input, cached input and output. The built-in
entries are ILLUSTRATIVE list prices of a few OpenAI models (taken from openai.com/api/pricing
when written); providers change prices and offer discounts (batch, flex, priority tiers), so
register your own with :func:`register_price` when cost matters. A model that is not in the table
gets NO cost: a missing number is better than a wrong one.

A model name is matched exactly, then with a dated snapshot suffix removed
(``gpt-4o-2024-08-06`` -> ``gpt-4o``, ``gpt-3.5-turbo-0301`` -> ``gpt-3.5-turbo``). Nothing else
is guessed: ``gpt-4o-audio-preview`` is not priced as ``gpt-4o``.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens; ``cached_input`` None means cached input is billed as input."""

    input: float
    output: float
    cached_input: float | None = None


#: model -> price. Illustrative; extend or override with :func:`register_price`.
PRICES: dict[str, Price] = {
    "gpt-5": Price(input=1.25, cached_input=0.125, output=10.00),
    "gpt-5-mini": Price(input=0.25, cached_input=0.025, output=2.00),
    "gpt-5-nano": Price(input=0.05, cached_input=0.005, output=0.40),
    "gpt-4.1": Price(input=2.00, cached_input=0.50, output=8.00),
    "gpt-4.1-mini": Price(input=0.40, cached_input=0.10, output=1.60),
    "gpt-4.1-nano": Price(input=0.10, cached_input=0.025, output=0.40),
    "gpt-4o": Price(input=2.50, cached_input=1.25, output=10.00),
    "gpt-4o-mini": Price(input=0.15, cached_input=0.075, output=0.60),
    "o3": Price(input=2.00, cached_input=0.50, output=8.00),
    "o4-mini": Price(input=1.10, cached_input=0.275, output=4.40),
    "gpt-4-turbo": Price(input=10.00, output=30.00),
    "gpt-3.5-turbo": Price(input=0.50, output=1.50),
}

_lock = threading.Lock()
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")


def _check(name: str, value: float | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number of USD per 1M tokens, not {value!r}")


def register_price(model: str, *, input: float, output: float, cached_input: float | None = None) -> None:
    """Set the price of ``model`` (USD per 1M tokens); replaces a built-in or earlier entry.

    A name without a date suffix also prices that model's dated snapshots.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty str, not {model!r}")
    _check("input", input)
    _check("output", output)
    _check("cached_input", cached_input, optional=True)
    with _lock:
        PRICES[model] = Price(float(input), float(output), None if cached_input is None else float(cached_input))


def price_for(model: str | None) -> Price | None:
    """The price of ``model``: exact name, else the name without its snapshot date; else None."""
    if not model:
        return None
    found = PRICES.get(model)
    if found is None:
        base = _SNAPSHOT.sub("", model)
        if base != model:
            found = PRICES.get(base)
    return found


def cost_usd(model: str | None, input_tokens: int | None, output_tokens: int | None,
             cached_input_tokens: int | None = None) -> float | None:  # fmt: skip
    """USD cost of one call, or None for an unknown model or unknown token counts.

    ``input_tokens`` includes ``cached_input_tokens`` (as OpenAI reports ``prompt_tokens``).
    """
    price = price_for(model)
    if price is None or input_tokens is None or output_tokens is None:
        return None
    cached = min(max(cached_input_tokens or 0, 0), input_tokens)
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    total = (input_tokens - cached) * price.input + cached * cached_rate + output_tokens * price.output
    return round(total / 1_000_000, 10)
