"""The completion operators' prompt extras: images attached to the prompt and the cached shared prefix.

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
    """

    template_fields: Sequence[str] = ("images", "storage_conn_id", *AgentChatRequestOperator.template_fields)

    def __init__(
        self,
        *,
        images: str | Sequence[str] | None = None,
        storage_conn_id: str | None = None,
        max_image_bytes: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_agentchat import arguments as rules

        if max_image_bytes is not None:
            rules.at_parse("max_image_bytes", rules.whole_number(max_image_bytes, 1))
        self.images, self.storage_conn_id, self.max_image_bytes = images, storage_conn_id, max_image_bytes

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
