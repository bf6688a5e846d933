"""The dev server's deterministic "model" (devserver/answers.py): tokens, prompt text, schema examples and the
``[[fault:invalid_output]]`` marker, which the batch and output-schema tests rely on."""

from __future__ import annotations

import jsonschema
import pytest

from airflow_agentchat.devserver.answers import (
    clean_prompt,
    content_text,
    count_tokens,
    example_for_schema,
    invalid_for_schema,
    invalid_output_due,
    media_note,
    prompt_tokens,
    tokenize,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"enum": ["bug", "question"]},
        "score": {"type": "integer", "minimum": 3, "maximum": 5},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}, "minItems": 2},
        "email": {"type": "string", "format": "email"},
    },
    "required": ["label", "score", "tags"],
    "$defs": {"Tag": {"type": "object", "properties": {"name": {"type": "string", "minLength": 4}}}},
}


@pytest.mark.parametrize("text", ["", "one", "  leading and trailing  ", "tabs\tand\nlines"])
def test_tokens_join_back_into_the_text(text):
    assert "".join(tokenize(text)) == text and count_tokens(text) == len(tokenize(text))


def test_prompt_text_and_tokens_come_from_text_parts_and_every_message():
    parts = [{"type": "text", "text": "Hello "}, {"type": "image_url", "image_url": {"url": "x"}}, "there"]
    assert content_text(parts) == "Hello there"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": parts}]
    assert prompt_tokens(messages) == (1 + 2) + (1 + 2)
    assert media_note(messages) == "[1 image]"
    assert clean_prompt("  Summarise [[fault:500]] this  ") == "Summarise  this"


def test_the_schema_example_validates_and_the_invalid_answer_does_not():
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    assert list(validator.iter_errors(example_for_schema(SCHEMA))) == []
    assert list(validator.iter_errors(invalid_for_schema(SCHEMA)))


@pytest.mark.parametrize(
    ("marker", "answers_so_far", "due"),
    [
        ("[[fault:invalid_output]]", 0, True),
        ("[[fault:invalid_output]]", 1, False),
        ("x", 0, False),
        ("[[fault:invalid_output:times=2]]", 1, True),
        ("[[fault:invalid_output:times=2]]", 2, False),
    ],
)
def test_invalid_output_is_due_for_that_many_answers(marker, answers_so_far, due):
    messages = [{"role": "user", "content": f"Label it {marker}"}]
    messages += [{"role": "assistant", "content": "{}"}, {"role": "user", "content": "fix it"}] * answers_so_far
    assert invalid_output_due(messages) is due
