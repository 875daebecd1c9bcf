"""Bending an answer to fit the JSON schema a chat request names (`response_format`).

Enough of JSON Schema for what pydantic and hand-written schemas use: $ref into $defs,
anyOf/oneOf (nullable fields), type lists, enum/const, properties/required/additionalProperties,
items/maxItems, maxLength, minimum/maximum.
"""

from __future__ import annotations

import json
from typing import Any


def _resolve(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node.get(part, {}) if part and isinstance(node, dict) else node
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema if isinstance(schema, dict) else {}


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, list):
        return kind
    if isinstance(kind, str):
        return [kind]
    if "properties" in schema:
        return ["object"]
    if "items" in schema:
        return ["array"]
    return []


def _fits(value: Any, kind: str) -> bool:
    return {"null": value is None, "object": isinstance(value, dict), "array": isinstance(value, list),
            "string": isinstance(value, str), "boolean": isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | float) and not isinstance(value, bool)}.get(kind, False)


def minimal_instance(schema: Any, root: dict[str, Any]) -> Any:
    """A small valid value of `schema` ("ok" for strings)."""
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            branches = [_resolve(b, root) for b in schema[key]]
            return minimal_instance(next((b for b in branches if "null" not in _types(b)), branches[0]), root)
    kinds = _types(schema) or ["object"]
    kind = next((k for k in kinds if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        if not props:
            return {"text": "ok"}
        return {k: minimal_instance(props[k], root) for k in schema.get("required", []) if k in props}
    if kind == "array":
        return [minimal_instance(schema.get("items", {}), root)
                for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "ok"[: schema.get("maxLength", 2)].ljust(schema.get("minLength", 0), "k")
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    return False if kind == "boolean" else None


def conform(value: Any, schema: Any, root: dict[str, Any]) -> Any:
    """`value` bent to fit `schema`: unknown keys dropped when forbidden, missing required keys
    filled, strings cut to maxLength, arrays to maxItems, numbers clamped, enums snapped."""
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            branches = [_resolve(b, root) for b in schema[key]]
            fitting = [b for b in branches if any(_fits(value, k) for k in _types(b))]
            return conform(value, fitting[0], root) if fitting else minimal_instance(schema, root)
    if schema.get("enum"):
        enum = schema["enum"]
        if value in enum:
            return value
        return next((v for v in ("other", "general", "comment") if v in enum), enum[0])
    kinds = _types(schema)
    if kinds and not any(_fits(value, k) for k in kinds):
        if "string" in kinds and value is not None:
            value = json.dumps(value) if not isinstance(value, str) else value
        else:
            return minimal_instance(schema, root)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties", True)
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in props:
                sub = _resolve(props[key], root)
                if item is None and key not in schema.get("required", []) and not _allows_null(sub, root):
                    continue
                out[key] = conform(item, sub, root)
            elif extra is not False:
                out[key] = item
        for key in schema.get("required", []):
            if key not in out and key in props:
                out[key] = minimal_instance(props[key], root)
        return out
    if isinstance(value, list):
        items = value[: schema["maxItems"]] if "maxItems" in schema else value
        return [conform(item, schema.get("items", {}), root) for item in items]
    if isinstance(value, str) and "maxLength" in schema:
        return value[: schema["maxLength"]]
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema:
            value = max(value, schema["minimum"])
        if "maximum" in schema:
            value = min(value, schema["maximum"])
    return value


def _allows_null(schema: dict[str, Any], root: dict[str, Any]) -> bool:
    if "null" in _types(schema):
        return True
    return any("null" in _types(_resolve(b, root)) for key in ("anyOf", "oneOf") for b in schema.get(key, []))
