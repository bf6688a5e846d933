"""json_schema.py: a JSON Schema ``output_schema`` is checked before any request; errors are worded like pydantic's."""

from __future__ import annotations

import pytest

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.json_schema import check_object_at_top, json_path, json_schema_validator, schema_error


@pytest.mark.parametrize(("parts", "path"), [((), "(root)"), (("items", 0, "name"), "items[0].name"), ((2,), "[2]")])
def test_paths_are_written_like_pydantics(parts, path):
    assert json_path(parts) == path


def test_a_missing_property_is_named_in_the_path():
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"required": ["name"]}}}}
    [error] = json_schema_validator(schema).iter_errors({"tags": [{"label": "x"}]})
    assert schema_error(error) == ("tags[0].name", "Field required")


@pytest.mark.parametrize(
    ("schema", "rule"),
    [
        ({"type": "object", "properties": {"a": {"type": 5}}}, "not a valid JSON Schema"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "'#/$defs/missing' cannot be resolved"),
        ({"$ref": "https://example.com/schema.json"}, "cannot be resolved within the schema"),
    ],
)
def test_a_schema_that_cannot_work_is_refused_naming_output_schema(schema, rule):
    with pytest.raises(InvalidRequestError) as caught:
        json_schema_validator(schema)
    [(field, message)] = caught.value.errors
    assert field == "output_schema" and rule in message


def test_the_top_must_be_an_object_also_behind_a_local_ref():
    check_object_at_top({"properties": {"a": {}}})
    check_object_at_top({"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object"}}})
    with pytest.raises(InvalidRequestError, match=r"must describe an object at the top .* got type 'array'"):
        check_object_at_top({"type": "array"})
