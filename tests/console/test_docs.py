"""Every console route is documented in docs/console.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.routing import Mount, Route

from controlplane.console.routes import routes

DOC = (Path(__file__).resolve().parents[2] / "docs" / "console.md").read_text()


def _documented() -> list[tuple[str, str]]:
    out = []
    for r in routes:
        if isinstance(r, Route):
            out += [(m, r.path) for m in sorted(r.methods or ()) if m != "HEAD"]
        elif isinstance(r, Mount):
            out.append(("GET", r.path + "/{path}"))
    return out


@pytest.mark.parametrize(("method", "path"), _documented())
def test_every_console_route_is_documented(method: str, path: str) -> None:
    assert f"| `{method} {path}` |" in DOC, f"document {method} {path} in docs/console.md"
