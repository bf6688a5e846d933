"""Images and prompt caching (``images=``, ``cache_prompt``) from a DAG under ``airflow dags test``; the dev
server's echo counts the images and its usage reports cache writes and reads."""

from __future__ import annotations

import shutil

from suite import AIRFLOW_HOME

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))


def test_images_and_cache_prompt_from_a_dag(run_dag, devserver):
    devserver.reset()
    folder = AIRFLOW_HOME / "media_cases"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "dent.png").write_bytes(PNG)
    xcoms = run_dag("agentchat_media_cases")
    assert xcoms["_returncode"] == 0, xcoms["_log"][-3000:]
    assert xcoms[("first", -1, "return_value")] == "Echo: describe these [2 images]"
    assert xcoms[("second", -1, "return_value")] == "Echo: and this one [1 image]"
    first, second = xcoms[("first", -1, "usage")], xcoms[("second", -1, "usage")]
    # The first request wrote the marked system prompt to the cache, the second (same prefix) read it.
    assert first["cache_created_input_tokens"] > 0 and first["cache_read_input_tokens"] == 0
    assert second["cache_read_input_tokens"] == first["cache_created_input_tokens"]
