"""A batch's bill before the first request: how many items will be sent, their tokens and their cost.

One pass over the prepared items, sending nothing: items already in the output (resume) and answers in the
response cache are not counted as sent. Each item to send counts its prompt with :func:`spend.estimate` (the
estimate the budgets reserve) and its completion with :func:`spend.completion_cap` when the request sets a cap
(an upper bound); an item without a cap counts the mean completion of the cached answers seen in this pass,
else of the answers an earlier run wrote to this output, else :data:`spend.DEFAULT_COMPLETION_TOKENS`. The
connection's prices turn the tokens into a cost (:meth:`spend.Prices.cost`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow_agentchat.batch.items import Prepared, Rejected
from airflow_agentchat.spend import DEFAULT_COMPLETION_TOKENS, Budget, BudgetExhaustedError, Prices
from airflow_agentchat.usage import TokenUsage

if TYPE_CHECKING:
    from airflow_agentchat.response_cache import ResponseCache


@dataclass
class Forecast:
    """What a run is expected to send and spend (this run only: earlier runs' spend is in ``already_used``)."""

    items: int = 0  # to be sent
    cached: int = 0  # answered from the response cache, never sent
    rejected: int = 0  # invalid items: recorded as errors, never sent
    prompt_tokens: int = 0
    completion_tokens: int = 0
    capped: int = 0  # items whose completion estimate is their own cap
    mean_completion: float = float(DEFAULT_COMPLETION_TOKENS)  # for each item without a cap
    completion_source: str = "default"  # of the mean: "cache", "previous_run" or "default"
    cost: float | None = None
    already_used: int = 0  # tokens earlier runs of this output paid

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens, "mean_completion": round(self.mean_completion, 1)}

    def describe(self) -> str:
        cost = f", cost about {self.cost:.6f}" if self.cost is not None else ""
        return (
            f"{self.items} items to send ({self.cached} answered from the cache, {self.rejected} invalid): about "
            f"{self.total_tokens} tokens (prompt {self.prompt_tokens} + completion {self.completion_tokens}; "
            f"{self.capped} items at their max_tokens cap, the others at {self.mean_completion:.0f} tokens each, "
            f"from the {self.completion_source.replace('_', ' ')} mean){cost}"
        )

    def over(self, budget: Budget) -> str | None:
        """Why the forecast does not fit the budget (with the numbers), or None when it fits."""
        problems = []
        if budget.max_total_tokens is not None and self.already_used + self.total_tokens > budget.max_total_tokens:
            problems.append(
                f"{self.total_tokens} tokens + {self.already_used} already used > max_total_tokens="
                f"{budget.max_total_tokens}"
            )
        used_cost = budget.used_cost or 0.0
        if budget.max_cost is not None and self.cost is not None and used_cost + self.cost > budget.max_cost:
            problems.append(f"cost {self.cost:.6f} + {used_cost:.6f} already spent > max_cost={budget.max_cost}")
        return "; ".join(problems) or None


def make_forecast(
    work: Iterable[Prepared | Rejected],
    *,
    prices: Prices,
    cache: ResponseCache | None = None,
    previous_mean: float | None = None,
    already_used: int = 0,
) -> Forecast:
    """Walk the items (reading the cache, sending nothing) and add up what the run will send."""
    forecast = Forecast(already_used=already_used)
    uncapped = 0
    cached_completion = 0
    for entry in work:
        if isinstance(entry, Rejected):
            forecast.rejected += 1
            continue
        if cache is not None and cache.reads:
            hit = cache.lookup(cache.key_of(entry))
            if hit is not None:
                forecast.cached += 1
                cached_completion += TokenUsage.of(hit.usage).completion_tokens
                continue
        forecast.items += 1
        forecast.prompt_tokens += entry.est_prompt_tokens
        if entry.max_completion_tokens is not None:
            forecast.capped += 1
            forecast.completion_tokens += entry.max_completion_tokens
        else:
            uncapped += 1
    if forecast.cached:
        forecast.mean_completion, forecast.completion_source = cached_completion / forecast.cached, "cache"
    elif previous_mean is not None:
        forecast.mean_completion, forecast.completion_source = previous_mean, "previous_run"
    forecast.completion_tokens += round(uncapped * forecast.mean_completion)
    prompt, completion = forecast.prompt_tokens, forecast.completion_tokens
    forecast.cost = prices.cost(TokenUsage(prompt, completion, prompt + completion))
    return forecast


def forecast_run(
    mode: str, work: Iterable[Prepared | Rejected], scan: Any, budget: Budget, cache: Any, *, log: Any, ti: Any
) -> Forecast:
    """The batch operator's step before sending: forecast, log it, push it to XCom (key ``forecast``); with
    ``mode="check"`` raise :class:`BudgetExhaustedError` with the numbers when it does not fit the budget."""
    previous = scan.usage.completion_tokens / scan.paid if scan.paid else None
    forecast = make_forecast(
        work, prices=budget.prices, cache=cache, previous_mean=previous, already_used=scan.usage.total_tokens
    )
    log.info("Forecast: %s", forecast.describe())
    if ti is not None:
        ti.xcom_push(key="forecast", value=forecast.as_dict())
    over = forecast.over(budget) if mode == "check" else None
    if over:
        raise BudgetExhaustedError(f"forecast='check': {over} ({forecast.describe()}); nothing was sent.")
    return forecast
