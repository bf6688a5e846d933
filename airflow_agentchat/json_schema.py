"""A JSON Schema ``output_schema``, checked when the output spec is built, and its validators.

The checks refuse, before any request, what cannot work: a schema its own dialect rejects, a ``$ref`` that does
not resolve inside the schema (nothing is fetched) and a top that is not an object (function parameters and the
first-JSON-object rule both need one). Two validators are built: ``jsonschema_rs`` (fast, for the common
valid answer) and ``jsonschema`` (for wording the errors of an invalid one, as ``(path, message)`` pairs with the
paths written like pydantic's). Pure: no I/O; jsonschema is imported only when a spec is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_agentchat.exceptions import InvalidRequestError


def field_error(field_name: str, rule: str) -> InvalidRequestError:
    return InvalidRequestError([(field_name, rule)])


def json_path(parts: Sequence[Any]) -> str:
    """``("items", 0, "name")`` -> ``items[0].name``; the empty path is ``(root)``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def schema_error(error: Any) -> tuple[str, str]:
    """A jsonschema error as ``(path, message)``; a missing property is named in the path, as pydantic does."""
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, Mapping):
        missing = [name for name in error.validator_value if name not in error.instance]
        for name in missing:
            if error.message.startswith(repr(name)):
                return json_path([*path, name]), "Field required"
    return json_path(path), error.message


def json_schema_validator(schema: dict[str, Any]) -> Any:
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise field_error("output_schema", f"not a valid JSON Schema: {exc.message}") from None
    validator = cls(schema)
    check_refs(schema, validator)
    return validator


def fast_validator(schema: dict[str, Any]) -> Any:
    """``jsonschema_rs``'s validator of the same dialect, or None when it cannot take this schema."""
    try:
        import jsonschema_rs

        return jsonschema_rs.validator_for(schema)
    except Exception:
        return None


def check_refs(schema: dict[str, Any], validator: Any) -> None:
    """Every ``$ref`` must resolve inside the schema: nothing is fetched, so a remote one is refused."""
    from referencing.exceptions import Unresolvable

    resolver = validator._resolver  # jsonschema's own resolver for this schema (the same rules it validates by)
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            ref = node.get("$ref")
            if isinstance(ref, str):
                try:
                    resolver.lookup(ref)
                except Unresolvable:
                    raise field_error("output_schema", f"$ref {ref!r} cannot be resolved within the schema") from None
            stack.extend(v for k, v in node.items() if k not in ("const", "enum", "default", "examples"))
        elif isinstance(node, list):
            stack.extend(node)


def check_object_at_top(schema: dict[str, Any]) -> None:
    """Function parameters and the first-JSON-object rule both need an object at the top."""
    top: Any = schema
    ref = top.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):  # pydantic puts recursive models behind a $ref
        for part in ref[2:].split("/"):
            top = top.get(part, {}) if isinstance(top, Mapping) else {}
    kind = top.get("type") if isinstance(top, Mapping) else None
    if kind != "object" and not (kind is None and isinstance(top, Mapping) and "properties" in top):
        raise field_error("output_schema", f"must describe an object at the top (type 'object'), got type {kind!r}")
