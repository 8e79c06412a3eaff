"""A cost estimate for /tokens: configured prices, else list prices of well-known models.

No network: the table is built in and may go stale, so ``model.input_price`` and
``model.output_price`` (USD per million tokens) override it. Unknown models get no estimate.
"""

from __future__ import annotations

__all__ = ["PRICES", "price_for", "estimate_cost"]

# USD per million tokens (prompt, completion): public list prices for standard processing.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
}
_BY_LENGTH = sorted(PRICES, key=len, reverse=True)


def price_for(model: str, input_price: float | None = None, output_price: float | None = None) -> tuple[float, float] | None:
    """(prompt, completion) USD per million tokens, or None when unknown."""
    if input_price is not None and output_price is not None:
        return input_price, output_price
    name = model.lower().rsplit("/", 1)[-1]
    for prefix in _BY_LENGTH:
        # "gpt-4o-2024-08-06" is gpt-4o; "gpt-4o-mini" must not match "gpt-4o"
        if name == prefix or (name.startswith(prefix + "-") and name[len(prefix) + 1 : len(prefix) + 2].isdigit()):
            known = PRICES[prefix]
            return (input_price if input_price is not None else known[0],
                    output_price if output_price is not None else known[1])
    return None


def estimate_cost(model: str, prompt_tokens: int, completion_tokens: int, *,
                  input_price: float | None = None, output_price: float | None = None) -> float | None:
    """Estimated USD for the given usage, or None when the price is unknown."""
    prices = price_for(model, input_price, output_price)
    if prices is None:
        return None
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1_000_000
