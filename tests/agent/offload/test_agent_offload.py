"""An agent whose cloud is down answers within its deadline, marks the hard case deferred, and
sends the cloud's answer once the cloud is back: the real agent (LiteRT, outbox, uplink, local
API on a socket), the real broker, the real control plane in process (ingestion + store + API)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from agent.api import DEADLINE_HEADER, create_app
from agent.config import validate
from agent.daemon import Agent, load_models
from tests.agent.offload.cloud import CLOUD_MANIFEST, FakeCloud
from tests.controlplane.test_ingest import controlplane, eventually, results_of
from tests.e2e.processes import DIGITS, EDGE_MODEL
from tests.mosquitto import free_port

HARD = 223  # an 8 the edge model is unsure of (see test_offloader.py)
EASY = 0


def png(index: int) -> bytes:
    images = np.load(DIGITS / "testset.npz")["images"]
    out = io.BytesIO()
    Image.fromarray(images[index]).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.slow
async def test_cloud_down_then_back(broker_url: str, unique: str, tmp_path: Path) -> None:
    device_id = f"off-{unique}"
    cloud_port = free_port()  # nothing listens here yet: the cloud is down
    settings = validate(
        {
            "device_id": device_id,
            "broker": broker_url,
            "data_dir": str(tmp_path / "agent"),
            "backends": ["litert"],
            "outbox": {"synchronous": "NORMAL"},
            "uplink": {"telemetry_interval_s": 60},
            "models": [
                {
                    "path": str(EDGE_MODEL),
                    "offload": {
                        "endpoint": f"http://127.0.0.1:{cloud_port}",
                        "model": "digits-cloud",
                        "manifest": str(CLOUD_MANIFEST),
                        "deadline_ms": 200,
                    },
                }
            ],
        }
    )
    settings.data_dir.mkdir(parents=True)
    cloud = FakeCloud()
    async with controlplane(broker_url, tmp_path / "cp", f"cp-{unique}") as cp:
        agent = Agent(settings, load_models(settings))
        await agent.start()
        app = create_app(
            agent.models, record=agent.record, stats=agent.stats, offload=agent.offload
        )
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        try:
            url = f"http://127.0.0.1:{server.port}/v1/models/digits-edge/image"
            async with aiohttp.ClientSession() as http:

                async def post(index: int, **headers: str) -> dict[str, Any]:
                    async with http.post(url, data=png(index), headers=headers) as response:
                        assert response.status == 200, await response.text()
                        body: dict[str, Any] = await response.json()
                        return body

                hard = await post(HARD, **{DEADLINE_HEADER: "300"})
                easy = await post(EASY)
            assert hard["offload"]["decision"] == "deferred"
            assert hard["offload"]["reason"] == "low_confidence"
            assert hard["offload"]["cloud_error"] == "unavailable"  # connection refused
            assert easy["offload"] == {"decision": "local"}

            async def stored() -> dict[str, Any] | None:
                rows = {r["result_id"]: r for r in await results_of(cp, device_id)}
                return rows if hard["result_id"] in rows and easy["result_id"] in rows else None

            rows = await eventually("both results stored", stored)
            assert "cloud" not in rows[hard["result_id"]]["offload"]

            await cloud.start(cloud_port)  # the cloud comes back

            async def answered() -> dict[str, Any] | None:
                rows = {r["result_id"]: r for r in await results_of(cp, device_id)}
                offload = rows[hard["result_id"]].get("offload", {})
                return offload if "cloud" in offload else None

            offload = await eventually("the late cloud answer stored", answered, timeout=30)
            assert offload["decision"] == "deferred"
            assert offload["cloud"]["model"] == "digits-cloud"
            assert offload["cloud"]["classes"][0]["label"] == "8"
            assert offload["agree"] is True  # the edge said 8 too, unsure
            assert cloud.seen[-1].doc["id"] == hard["result_id"]
            assert (await agent.offloader.queue.stats()).depth == 0  # type: ignore[union-attr]

            agreement = await cp.get("/api/v1/results/agreement", params={"model": "digits-edge"})
            (version,) = agreement.json()["versions"]
            assert (version["deferred"], version["cloud_answers"], version["agreed"]) == (1, 1, 1)
        finally:
            await server.close()
            await agent.stop()
            for served in agent.models.values():
                served.close()
            await cloud.stop()
