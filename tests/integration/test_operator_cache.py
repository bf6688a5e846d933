"""The response cache of ``@task.agent_chat`` under ``airflow dags test``: the second run sends nothing."""

from __future__ import annotations


def test_the_decorator_run_twice_under_airflow_sends_once(run_dag, devserver, airflow_db):
    import shutil

    shutil.rmtree(airflow_db / "operator-response-cache", ignore_errors=True)
    devserver.reset()
    first = run_dag("agentchat_cache_cases")
    assert first[("summarize", -1, "cached")] is False and devserver.stats(timestamps=False)["total"] == 2
    assert first[("deferred", -1, "cached")] is False and first[("deferred", -1, "usage")]["total_tokens"] > 0
    second = run_dag("agentchat_cache_cases")
    assert devserver.stats(timestamps=False)["total"] == 2
    assert second[("deferred", -1, "cached")] is True
    assert second[("deferred", -1, "return_value")] == first[("deferred", -1, "return_value")]
    assert second[("summarize", -1, "cached")] is True
    assert second[("summarize", -1, "usage")]["total_tokens"] == 0
    assert second[("summarize", -1, "cached_usage")] == first[("summarize", -1, "usage")]
    assert second[("summarize", -1, "return_value")] == first[("summarize", -1, "return_value")]
