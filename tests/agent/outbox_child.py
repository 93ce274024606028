"""Helper process for the outbox's kill test: put results as fast as possible, print each id.

``python -m tests.agent.outbox_child PATH FULL|NORMAL`` opens the outbox at PATH and runs concurrent
producers; each prints a result's id (and flushes) right after its ``put`` returned, that is once
the outbox said the row is committed. The test SIGKILLs this process mid-stream and checks that
every printed id is in the file.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Literal, cast

from agent.outbox import Outbox

PRODUCERS = 16
PAYLOAD = b"x" * 400


async def produce(box: Outbox, prefix: str) -> None:
    for n in range(10**9):
        result_id = f"{prefix}-{n}"
        await box.put(result_id, time.time(), PAYLOAD)
        sys.stdout.write(result_id + "\n")
        sys.stdout.flush()


async def main(path: Path, synchronous: Literal["FULL", "NORMAL"]) -> None:
    async with Outbox(path, synchronous=synchronous) as box:
        tag = uuid.uuid4().hex[:6]
        await asyncio.gather(*(produce(box, f"{tag}-{p}") for p in range(PRODUCERS)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), cast(Literal["FULL", "NORMAL"], sys.argv[2])))
