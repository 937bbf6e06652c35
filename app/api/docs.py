"""How the API documents itself, where FastAPI's own OpenAPI needs a hand."""

from typing import Any

from pydantic import BaseModel

from app.api import admin_schemas, schemas


def restore_null_examples(spec: dict[str, Any]) -> None:
    """Put back the nulls FastAPI strips from every example when it writes the OpenAPI
    document (fastapi/fastapi#5559): without them, the example of a user with `"image": null`
    would lose the key and no longer match its own schema, where `image` is required."""
    models = {
        name: model
        for module in (schemas, admin_schemas)
        for name, model in vars(module).items()
        if isinstance(model, type) and issubclass(model, BaseModel)
    }
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        if "examples" in schema and name in models:
            schema["examples"] = models[name].model_json_schema()["examples"]
