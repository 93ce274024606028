"""Export the JSON Schemas of the wire messages and the manifest to ``protocol/schema/``.

Run ``python -m protocol.schema`` after changing a message; a test fails while the committed
files differ from the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from protocol.commands import CommandReply, CommandRequest
from protocol.manifest import ModelManifest
from protocol.messages import ResultBatch, Status, Telemetry
from protocol.release import DeploymentReport, SignedDesired, SignedRelease

SCHEMA_DIR = Path(__file__).parent / "schema"
DOCUMENTS: dict[str, type[BaseModel]] = {
    "status": Status,
    "telemetry": Telemetry,
    "results": ResultBatch,
    "manifest": ModelManifest,
    "release": SignedRelease,
    "desired": SignedDesired,
    "deployment": DeploymentReport,
    "command": CommandRequest,
    "command-reply": CommandReply,
}


def render(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(mode="validation"), indent=2, sort_keys=True) + "\n"


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in DOCUMENTS.items():
        path = directory / f"{name}.schema.json"
        path.write_text(render(model))
        written.append(path)
    return written


if __name__ == "__main__":
    for p in export():
        sys.stdout.write(f"wrote {p}\n")
