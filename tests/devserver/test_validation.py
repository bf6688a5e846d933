"""The dev server's request validation (devserver/validation.py): content parts as DigitalOcean serves them,
through the official ``openai`` SDK (an independent client), and a bad part is a 400 naming it."""

from __future__ import annotations

import openai
import pytest

PNG = "data:image/png;base64,iVBORw0KGgo="


def test_the_openai_sdk_sends_parts_and_the_echo_counts_the_images(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in"},
                    {"type": "text", "text": " these pictures?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": PNG}},
                ],
            },
        ],
    )
    assert answer.choices[0].message.content == "Echo: What is in these pictures? [2 images]"
    # text parts count like string content: system 2 tokens + 1, user 5 tokens + 1
    assert answer.usage is not None and answer.usage.prompt_tokens == 9
    assert getattr(answer.usage, "cache_read_input_tokens", None) is None  # no cache_control, no cache fields


def test_one_image_and_a_video_streamed(client: openai.OpenAI) -> None:
    content = [
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "video_url", "video_url": {"url": "https://example.com/clip.mp4"}},
    ]
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": content}],
        stream=True,  # type: ignore[list-item]
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Echo: [1 image, 1 video]"


def test_a_bad_part_is_a_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="m",
            messages=[
                {"role": "system", "content": "s"},
                {"role": "user", "content": ["a", "b", {"type": "image_url", "image_url": {"url": "file:///x.png"}}]},
            ],  # type: ignore[list-item]
        )
    assert caught.value.body["param"] == "messages[1].content[2].image_url.url"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\]\.content\[0\]\.type: image_url parts"):
        client.chat.completions.create(
            model="m",
            messages=[{"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}],  # type: ignore[list-item]
        )
