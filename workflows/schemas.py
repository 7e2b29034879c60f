"""JSON Schemas of every workflow input and result, generated from the models.

python -m workflows.schemas --write   # regenerate workflows/schemas/*.json
python -m workflows.schemas --check   # exit 1 when the checked-in files drift
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from vocabulary.contract import Progress
from workflows.registry import JOBS

SCHEMA_DIR = Path(__file__).parent / "schemas"

CONTRACT: dict[str, type[BaseModel]] = {
    **{f"{job.name}.{part}": model for job in JOBS for part, model in (("input", job.input), ("result", job.result))},
    "progress": Progress,
}


def render(model: type[BaseModel], mode: str) -> str:
    schema = model.model_json_schema(mode="validation" if mode == "input" else "serialization")
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def expected() -> dict[str, str]:
    return {f"{name}.schema.json": render(model, name.rsplit(".", 1)[-1]) for name, model in CONTRACT.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    drift = []
    for filename, text in expected().items():
        path = SCHEMA_DIR / filename
        if args.write:
            SCHEMA_DIR.mkdir(exist_ok=True)
            path.write_text(text)
        elif not path.exists() or path.read_text() != text:
            drift.append(filename)
    if drift:
        print("schemas drifted from the models (run `make schemas`): " + ", ".join(drift), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
