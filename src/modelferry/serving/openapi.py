"""The scoring API of one deployment as an OpenAPI document, from the model's signature.

`/openapi.json` (OpenAPI 3.0) and `/swagger.json` (Swagger 2.0 by default, `?version=3` for
3.0, as Azure ML's inference server answers) describe `POST /score`: the request shapes
the server accepts, with the model's own columns and types, and the answer. Code
generators and API gateways read them; Azure ML serves the same documents for its
endpoints from `swagger2.json` / `swagger3.json` beside the scoring script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelferry.serving.schema import FeatureSpec

#: What a signature's column type is in JSON Schema.
_JSON_TYPES = {
    "double": "number",
    "float": "number",
    "long": "integer",
    "integer": "integer",
    "boolean": "boolean",
}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def openapi3(
    title: str, version: str, features: Sequence[FeatureSpec], classes: Sequence[str]
) -> dict[str, Any]:
    """An OpenAPI 3.0.3 document of `POST /score` for a model with these inputs and classes."""
    return {
        "openapi": "3.0.3",
        "info": _info(title, version),
        "paths": {"/score": {"post": _operation(features, classes, "#/components/schemas")}},
        "components": {
            "schemas": _schemas(features, classes, "#/components/schemas"),
            "securitySchemes": {"Bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"Bearer": []}],
    }


def swagger2(
    title: str, version: str, features: Sequence[FeatureSpec], classes: Sequence[str]
) -> dict[str, Any]:
    """The same as a Swagger 2.0 document, for clients that read only that version.

    Swagger 2.0 has no `oneOf`: the request is described in Azure ML's `input_data` shape,
    which every Azure ML client sends; the other shapes are still accepted.
    """
    refs = "#/definitions"
    operation = _operation(features, classes, refs)
    body = {
        "in": "body",
        "name": "body",
        "required": True,
        "schema": {"$ref": f"{refs}/InputData"},
    }
    responses = {
        code: {"description": answer["description"], "schema": _json_schema_of(answer)}
        for code, answer in operation["responses"].items()
    }
    return {
        "swagger": "2.0",
        "info": _info(title, version),
        "schemes": ["https", "http"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "paths": {
            "/score": {
                "post": {
                    "summary": operation["summary"],
                    "operationId": operation["operationId"],
                    "parameters": [body],
                    "responses": responses,
                }
            }
        },
        "definitions": {
            name: schema
            for name, schema in _schemas(features, classes, refs, swagger2=True).items()
            if name in ("InputData", "Predictions", "Error")
        },
        "securityDefinitions": {
            "Bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}
        },
        "security": [{"Bearer": []}],
    }


def _info(title: str, version: str) -> dict[str, str]:
    return {
        "title": title,
        "version": version,
        "description": (
            "Scores rows with the model: one probability per class per row. Send "
            "'Authorization: Bearer <key>'; pin a deployment with the "
            "'azureml-model-deployment' header."
        ),
    }


def _operation(
    features: Sequence[FeatureSpec], classes: Sequence[str], refs: str
) -> dict[str, Any]:
    def answer(description: str, schema: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": f"{refs}/{schema}"}}},
        }

    shapes = ["InputData", "DataframeSplit", "DataframeRecords", "Inputs"]
    return {
        "summary": f"Class probabilities ({', '.join(classes)}) for each row",
        "operationId": "score",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [{"$ref": f"{refs}/{shape}"} for shape in shapes]}
                }
            },
        },
        "responses": {
            "200": answer("one probability per class per row", "Predictions"),
            "400": answer("the body is not a request the model takes; the error says why", "Error"),
            "401": answer("missing or wrong key", "Error"),
            "413": answer("the body or the number of rows is too large", "Error"),
        },
    }


def _json_schema_of(answer: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = answer["content"]["application/json"]["schema"]
    return schema


def _schemas(
    features: Sequence[FeatureSpec],
    classes: Sequence[str],
    refs: str,
    *,
    swagger2: bool = False,
) -> dict[str, Any]:
    names = [feature.name for feature in features]
    # A row mixes the columns' types: `anyOf` those there are (Swagger 2.0 has no `anyOf`).
    kinds = list({repr(c): c for c in map(_cell, features)}.values())
    cell: dict[str, Any] = kinds[0] if len(kinds) == 1 else {"anyOf": kinds} if kinds else {}
    if swagger2:
        cell = {"type": "number"}
    row = {"type": "array", "items": cell, "minItems": len(names), "maxItems": len(names)}
    table = {"type": "array", "items": row, "minItems": 1}
    columns = {"type": "array", "items": {"type": "string", "enum": names}}
    record = {
        "type": "object",
        "properties": {f.name: _cell(f, swagger2) for f in features},
        "required": [f.name for f in features if f.required],
        "additionalProperties": False,
    }
    example_row = [0 if _JSON_TYPES.get(f.type) == "integer" else 0.0 for f in features]
    return {
        "InputData": {
            "type": "object",
            "description": "Azure ML's shape; columns may come in any order",
            "properties": {
                "input_data": {
                    "type": "object",
                    "properties": {
                        "columns": columns,
                        "index": {"type": "array", "items": {}},
                        "data": table,
                    },
                    "required": ["data"],
                }
            },
            "required": ["input_data"],
            "example": {"input_data": {"columns": names, "data": [example_row]}},
        },
        "DataframeSplit": {
            "type": "object",
            "description": "MLflow's split orientation",
            "properties": {
                "dataframe_split": {
                    "type": "object",
                    "properties": {"columns": columns, "data": table},
                    "required": ["data"],
                }
            },
            "required": ["dataframe_split"],
        },
        "DataframeRecords": {
            "type": "object",
            "description": "MLflow's records orientation: one object per row",
            "properties": {"dataframe_records": {"type": "array", "items": record, "minItems": 1}},
            "required": ["dataframe_records"],
        },
        "Inputs": {
            "type": "object",
            "description": "rows in signature order, or one list per column",
            "properties": {
                "inputs": {
                    "oneOf": [
                        table,
                        {
                            "type": "object",
                            "properties": {
                                f.name: {"type": "array", "items": _cell(f)} for f in features
                            },
                        },
                    ]
                }
            },
            "required": ["inputs"],
        },
        "Predictions": {
            "type": "object",
            "properties": {
                "predictions": {
                    "type": "array",
                    "items": {
                        "type": "array",
                        "items": {"type": "number", "minimum": 0, "maximum": 1},
                        "minItems": len(classes),
                        "maxItems": len(classes),
                    },
                },
                "classes": {"type": "array", "items": {"type": "string", "enum": list(classes)}},
                "deployment": {"type": "string"},
                "model_version": {"type": "string"},
            },
            "required": ["predictions", "classes"],
        },
        "Error": _ERROR,
    }


def _cell(feature: FeatureSpec, swagger2: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _JSON_TYPES.get(feature.type, "number")}
    if not feature.required:
        schema["x-nullable" if swagger2 else "nullable"] = True
    return schema
