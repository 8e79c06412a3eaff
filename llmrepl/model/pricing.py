"""A cost estimate for /tokens: configured prices, else list prices of well-known models.

No network: the table is built in and may go stale, so ``model.input_price`` and
``model.output_price`` (USD per million tokens) override it (``model.input_price`` also
sets the cached rate to the model's listed cached share of it). Unknown models get no estimate.
Cached input (``usage.prompt_tokens_details.cached_tokens``) is priced at the cached rate;
input written to the cache (``cache_write_tokens``) at the write rate where the model has one
(GPT-5.6: 1.25x input).
"""

from __future__ import annotations

__all__ = ["PRICES", "CACHE_WRITE", "price_for", "cached_price_for", "estimate_cost"]

# USD per million tokens: (input, cached input, output), standard processing.
# No figure here was read from OpenAI's own page (no network while writing this table);
# each line names the secondary source it came from and that source's date. Verify
# against https://developers.openai.com/api/docs/pricing before relying on a figure.
PRICES: dict[str, tuple[float, float, float]] = {
    # OpenAI's GPT-5.6 announcement (2026-06-27) as quoted by Simon Willison and reported by
    # howtonotcode.com and ai-cost-estimator.com (read 2026-12): input/output per 1M, cache
    # reads 90 % off, cache writes 1.25x input (CACHE_WRITE below).
    "gpt-5.6-sol": (5.00, 0.50, 30.00),
    "gpt-5.6-terra": (2.50, 0.25, 15.00),
    "gpt-5.6-luna": (1.00, 0.10, 6.00),
    # docs.rs crate adk-model 0.6.0, src/openai/pricing.rs, "Token pricing for OpenAI
    # models (March 2026)": GPT-5.4 family, cached input 90 % off.
    "gpt-5.4": (2.50, 0.25, 15.00),
    "gpt-5.4-mini": (0.75, 0.075, 4.50),          # the default model (config.py)
    # github/docs data/tables/copilot/models-and-pricing.yml (read 2026-12, undated rows)
    "gpt-5.2": (1.75, 0.175, 14.00),
    "gpt-5-mini": (0.25, 0.025, 2.00),
    "gpt-4.1": (2.00, 0.50, 8.00),
    # input/output: this table before 2026-12 (list prices then); cached: the family
    # discount adk-model 0.6.0 states (March 2026): GPT-5 90 %, GPT-4.1 75 %, o-series 50 %
    "gpt-5": (1.25, 0.125, 10.00),
    "gpt-5-nano": (0.05, 0.005, 0.40),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "o3-mini": (1.10, 0.55, 4.40),
    "o4-mini": (1.10, 0.55, 4.40),   # adk-model lists o4-mini cached at 0.275: check
    # docs.rs crate openai-models 0.1.1 (from openai.com/api/pricing, undated): cached 50 %
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4o-mini": (0.15, 0.075, 0.60),
}
_BY_LENGTH = sorted(PRICES, key=len, reverse=True)
# Input written to the prompt cache costs this multiple of the input rate (same source as
# the GPT-5.6 rows). Earlier families write for free: only their reads are discounted.
CACHE_WRITE: dict[str, float] = {"gpt-5.6": 1.25}


def _known(model: str) -> tuple[float, float, float] | None:
    name = model.lower().rsplit("/", 1)[-1]
    for prefix in _BY_LENGTH:
        # "gpt-4o-2024-08-06" is gpt-4o; "gpt-4o-mini" must not match "gpt-4o"
        if name == prefix or (name.startswith(prefix + "-") and name[len(prefix) + 1 : len(prefix) + 2].isdigit()):
            return PRICES[prefix]
    return None


def price_for(model: str, input_price: float | None = None, output_price: float | None = None) -> tuple[float, float] | None:
    """(prompt, completion) USD per million tokens, or None when unknown."""
    if input_price is not None and output_price is not None:
        return input_price, output_price
    known = _known(model)
    if known is None:
        return None
    return (input_price if input_price is not None else known[0],
            output_price if output_price is not None else known[2])


def cached_price_for(model: str, input_price: float | None = None) -> float | None:
    """USD per million cached prompt tokens: the table's cached rate (scaled to a configured
    input price by the model's listed share); a configured price alone for an unknown
    model means no discount is assumed."""
    known = _known(model)
    if known is None:
        return input_price
    if input_price is None:
        return known[1]
    return input_price * known[1] / known[0]


def _write_factor(model: str) -> float:
    name = model.lower().rsplit("/", 1)[-1]
    return next((f for family, f in CACHE_WRITE.items() if name == family or name.startswith(family + "-")), 1.0)


def estimate_cost(model: str, prompt_tokens: int, completion_tokens: int, *,
                  input_price: float | None = None, output_price: float | None = None,
                  cached_tokens: int = 0, cache_write_tokens: int = 0) -> float | None:
    """Estimated USD for the given usage, or None when the price is unknown. ``cached_tokens``
    are part of ``prompt_tokens`` (as the API reports them) and cost the cached rate;
    ``cache_write_tokens`` are part of the rest and cost the model's write rate."""
    prices = price_for(model, input_price, output_price)
    if prices is None:
        return None
    cached = min(max(cached_tokens, 0), prompt_tokens)
    cached_rate = cached_price_for(model, input_price)
    if cached_rate is None:
        cached_rate = prices[0]
    written = min(max(cache_write_tokens, 0), prompt_tokens - cached)
    fresh = prompt_tokens - cached - written
    return (fresh * prices[0] + written * prices[0] * _write_factor(model) + cached * cached_rate
            + completion_tokens * prices[1]) / 1_000_000
