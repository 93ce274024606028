"""A load generator for the agent's Open Inference Protocol route, run as its own process.

``python -m bench.loadgen URL MODEL --clients C --seconds S --input NAME --shape 1,224,224,3
--datatype INT8`` posts the same binary-extension request from C concurrent connections for S
seconds and prints one JSON line: requests answered, failures, seconds, and latencies (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp
import numpy as np

from protocol.tensors import NUMPY_BY_DATATYPE


def binary_request(name: str, shape: list[int], datatype: str, output: str) -> tuple[bytes, int]:
    data = np.random.default_rng(0).integers(0, 100, size=shape).astype(NUMPY_BY_DATATYPE[datatype])
    raw = data.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": output, "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + raw, len(header)


async def run(args: argparse.Namespace) -> dict[str, object]:
    body, header_len = binary_request(
        args.input, [int(d) for d in args.shape.split(",")], args.datatype, args.output
    )
    headers = {
        "Inference-Header-Content-Length": str(header_len),
        "Content-Type": "application/octet-stream",
    }
    url = f"{args.url}/v2/models/{args.model}/infer"
    if args.get:  # the HTTP floor: the same client and server, no body and no inference
        url, body, headers = f"{args.url}{args.get}", b"", {}
    method = "GET" if args.get else "POST"
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + args.seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            async with session.request(method, url, data=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    failures += 1
                    continue
            latencies.append((time.perf_counter() - t0) * 1000)

    connector = aiohttp.TCPConnector(limit=args.clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):  # warm-up
            async with session.request(method, url, data=body, headers=headers) as r:
                await r.read()
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(args.clients)))
        elapsed = time.perf_counter() - started
    return {
        "answered": len(latencies),
        "failures": failures,
        "seconds": elapsed,
        "latencies_ms": latencies,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("model")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--shape", required=True)
    p.add_argument("--datatype", required=True)
    p.add_argument("--get", metavar="PATH", help="GET this path instead (e.g. /v2/health/live)")
    result = asyncio.run(run(p.parse_args()))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
