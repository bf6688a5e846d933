"""redaction.py: the access key leaves text as ``***``; keys too short to be one are left alone."""

from __future__ import annotations

import pytest

from airflow_agentchat.redaction import redact, redact_optional

KEY = "sk-canary-7f3a9c"


def test_every_occurrence_of_the_key_is_replaced():
    text = f"401 for key {KEY}; echoed again: {KEY}."
    assert redact(text, KEY) == "401 for key ***; echoed again: ***."


@pytest.mark.parametrize("secret", [None, "", "abc"])
def test_no_key_or_one_too_short_to_be_a_key_leaves_the_text_as_it_is(secret):
    assert redact("a bad answer: abc", secret) == "a bad answer: abc"


def test_an_absent_field_stays_absent_and_a_present_one_is_redacted():
    assert redact_optional(None, KEY) is None
    assert redact_optional(f"key={KEY}", KEY) == "key=***"
