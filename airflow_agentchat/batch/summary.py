"""A batch run's summary: the one dict a task returns, logs and pushes to XCom.

``usage``, ``cost``, ``succeeded``, ``failed`` and ``connections`` are over the whole output (every run that
wrote to it); the ``run_*`` fields, ``sent``, ``requests``, ``repairs``, ``cached`` and ``failovers`` are this
run's. ``connections`` maps each connection to the lines it answered (``answers``), the error lines it was the
last one tried for (``errors``) and, when priced, their ``cost``.
"""

from __future__ import annotations

from typing import Any


def run_summary(
    output: Any,
    composed: Any,
    run: Any,
    input_stats: Any,
    elapsed: float,
    total: int,
    *,
    prices: Any,
    budget: Any,
    forecast: Any,
    rate_share: dict[str, Any],
    failover: bool = False,
) -> dict[str, Any]:
    """The summary of a run from the composed output, the run's counters and the input's."""
    fraction = composed.failed / composed.total if composed.total else 0.0
    summary: dict[str, Any] = {
        "output_path": str(output),
        "total": composed.total,
        "succeeded": composed.succeeded,
        "failed": composed.failed,
        "failed_fraction": round(fraction, 6),
        "error_types": composed.error_types,
        "invalid_output": composed.error_types.get("invalid_output", 0),
        "usage": composed.usage.as_dict(),
        "sent": run.sent,
        "requests": run.requests,
        "repairs": run.repairs,
        "attempts": run.attempts,
        "run_usage": run.usage.as_dict(),
        "cached": run.cached,
        "cached_usage": run.cached_tokens.total().as_dict(),
        "failovers": run.failovers,
        "connections": composed.connections,
        "resumed": input_stats.resumed,
        "duplicates": input_stats.duplicates,
        "invalid": input_stats.rejected,
        "elapsed_s": round(elapsed, 3),
        "items_per_s": round(run.sent / run.elapsed, 1) if run.elapsed > 0 else 0.0,
        "rate_share": rate_share,
    }
    if failover:  # each line priced by the connection that answered it
        summary["cost"], summary["run_cost"] = round(composed.cost, 6), round(run.cost, 6)
    elif prices.known:
        summary["cost"] = prices.cost(summary["usage"])
        summary["run_cost"] = prices.cost(summary["run_usage"])
    if forecast is not None:
        actual = {"items": run.sent, "cached": run.cached, "total_tokens": run.usage.total_tokens}
        summary["forecast"] = {**forecast.as_dict(), "actual": {**actual, "cost": summary.get("run_cost")}}
    if budget.active:
        not_sent = max(0, total - input_stats.resumed - input_stats.duplicates - run.done)
        summary.update(budget_exhausted=budget.exhausted, not_sent=not_sent if budget.exhausted else 0)
    return summary
