"""The completion operators' prompt extras: images attached to the prompt, the cached shared prefix and the
response cache's arguments (its use: :mod:`airflow_agentchat.operators.answer_cache`).

A base class of its own so the completion operator's module stays about the conversation. Import-light: the
files are read in ``execute`` (:mod:`airflow_agentchat.images`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_agentchat.operators.base import AgentChatRequestOperator


class AgentChatPromptOperator(AgentChatRequestOperator):
    """:class:`AgentChatRequestOperator` plus images for the prompt.

    :param images: images for the prompt's user message (templated; a string or a list): an ``https://`` URL
        (the agent fetches it), a ``data:image/...;base64,`` URL, a local path or an object-storage URI
        (``s3://bucket/key``, ``gs://...``, ``file://...``). Files are read on the worker, which sends them as
        base64 data URLs; only PNG, JPEG, GIF and WEBP files (judged by their first bytes) are sent. The worker
        reads any file it can read, so name only images here.
    :param storage_conn_id: the Airflow connection with the storage credentials for ``images`` URIs, e.g. an
        ``aws`` connection for ``s3://`` (templated; without it: the worker's ambient credentials).
    :param max_image_bytes: the most one image file may weigh (default 20 MiB): a larger one fails the task
        before sending, naming it; reading stops there.
    :param cache_path: a response cache across runs (templated URI or path, ``storage_conn_id`` credentials;
        off when unset): when the conversation's first request, the endpoint and the output schema got a valid
        answer before, that answer is used and nothing is sent (XCom ``cached`` true, ``usage`` zero and the
        original usage as ``cached_usage``); a new valid answer is stored. Never used with Python tools or
        ``require_approval``. See ``docs/incremental.md``.
    :param cache_ttl: seconds (or a ``timedelta``) an entry stays valid; default no expiry.
    :param cache_mode: ``"read_write"`` (default), ``"read_only"`` or ``"refresh"`` (send, and overwrite).
    :param cache_nondeterministic: also cache requests with temperature > 0 (or unset) and no ``seed``.
    """

    template_fields: Sequence[str] = (
        "images",
        "storage_conn_id",
        "cache_path",
        *AgentChatRequestOperator.template_fields,
    )

    def __init__(
        self,
        *,
        images: str | Sequence[str] | None = None,
        storage_conn_id: str | None = None,
        max_image_bytes: int | None = None,
        cache_path: str | None = None,
        cache_ttl: Any = None,
        cache_mode: str = "read_write",
        cache_nondeterministic: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_agentchat import arguments as rules
        from airflow_agentchat.response_cache import check_cache_args  # no pydantic, no HTTP: cheap at parse time

        if max_image_bytes is not None:
            rules.at_parse("max_image_bytes", rules.whole_number(max_image_bytes, 1))
        check_cache_args(cache_path, cache_ttl, cache_mode, cache_nondeterministic)
        self.images, self.storage_conn_id, self.max_image_bytes = images, storage_conn_id, max_image_bytes
        self.cache_path, self.cache_ttl, self.cache_mode = cache_path, cache_ttl, cache_mode
        self.cache_nondeterministic = cache_nondeterministic

    def prompt_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``messages`` with the images on the last user message and the shared prefix marked for caching."""
        from airflow_agentchat.prompt_cache import mark_prefix

        if self.images:
            from airflow_agentchat.images import DEFAULT_MAX_IMAGE_BYTES, attach_images, image_parts

            parts = image_parts(
                self.images,
                conn_id=self.storage_conn_id or None,
                max_bytes=self.max_image_bytes or DEFAULT_MAX_IMAGE_BYTES,
            )
            messages = attach_images(messages, parts)
        return mark_prefix(messages, self.prompt_cache_ttl())
