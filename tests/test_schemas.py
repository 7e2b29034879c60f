"""The checked-in JSON Schemas are the contract other services code against: they must match the models."""

from __future__ import annotations

import json

from workflows.schemas import SCHEMA_DIR, expected


def test_checked_in_schemas_match_the_models():
    files = expected()
    for filename, text in files.items():
        path = SCHEMA_DIR / filename
        assert path.exists(), f"{filename} missing: run `make schemas`"
        assert path.read_text() == text, f"{filename} drifted from the models: run `make schemas` and commit"
    stray = {p.name for p in SCHEMA_DIR.glob("*.json")} - set(files)
    assert not stray, f"schemas with no model: {stray}"


def test_batch_input_schema_says_what_callers_need():
    schema = json.loads((SCHEMA_DIR / "BatchImportWorkflow.input.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["kind"]
    assert schema["properties"]["requests"]["anyOf"][0]["maxItems"] == 50_000
