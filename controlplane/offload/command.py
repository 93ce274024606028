"""``edgefleet offload serve``: the command line of the default offload server.

    edgefleet offload serve --model digits-cloud=models/digits/cloud.onnx --listen 0.0.0.0:8000

Flags are checked before anything loads, models are loaded before the port is bound, and a bad
flag, a missing or unreadable model or a busy port ends with one line on stderr and exit status 1
(2 for a usage error), never a traceback.
"""

from __future__ import annotations

import argparse
import logging

from controlplane.argtypes import number, whole_number
from controlplane.errors import ConfigError

log = logging.getLogger("controlplane.offload")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("serve", help="serve ONNX models over the Open Inference Protocol")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME[:VERSION]=PATH",
        help="an ONNX model to serve (repeat for more; the version defaults to 1)",
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:8000",
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:8000)",
    )
    p.add_argument(
        "--max-batch",
        type=whole_number(1),
        default=32,
        metavar="N",
        help="most rows merged into one execution (default 32; 1 turns batching off)",
    )
    p.add_argument(
        "--max-queue-delay-ms",
        type=number(0),
        default=2.0,
        metavar="MS",
        help="how long the oldest request waits for its batch to fill (default 2)",
    )
    p.add_argument(
        "--max-queue",
        type=whole_number(1),
        default=256,
        metavar="N",
        help="requests that may wait per model; more get 503 (default 256)",
    )
    p.add_argument(
        "--threads",
        type=whole_number(0),
        default=0,
        metavar="N",
        help="ONNX Runtime intra-op threads per model (default 0: its own choice)",
    )
    p.add_argument(
        "--drain-grace",
        type=number(0),
        default=0.0,
        metavar="SECONDS",
        help="on SIGTERM, stay up answering not-ready at least this long (default 0)",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    """Load the models, serve until SIGTERM or SIGINT, drain, and exit 0."""
    import uvicorn

    from controlplane.cli import bind, configure_logging
    from controlplane.offload.batcher import BatchPolicy
    from controlplane.offload.runtime import load, parse_model_arg
    from controlplane.offload.server import DrainingServer, build_state, create_app

    configure_logging(args.log_level)
    host, port = _address(args.listen)
    sources = [parse_model_arg(text) for text in args.model]
    policy = BatchPolicy(
        max_batch=args.max_batch, max_delay=args.max_queue_delay_ms / 1000, max_queue=args.max_queue
    )
    models = [load(source, threads=args.threads) for source in sources]
    state = build_state(models, policy)
    for model in models:
        log.info(
            "model %s version %s from %s on %s (%s)",
            model.name,
            model.version,
            model.path,
            model.providers[0],
            "batching" if model.batched else "no batch dimension",
        )
    sock = bind(host, port)
    try:
        config = uvicorn.Config(
            create_app(state),
            log_config=None,
            access_log=False,
            log_level=args.log_level.lower(),
            lifespan="on",
            timeout_graceful_shutdown=30,
        )
        server = DrainingServer(config, state, args.drain_grace)
        log.info("serving http://%s:%d", host, port)
        server.run(sockets=[sock])
        return 0 if server.started else 1
    finally:
        sock.close()


def offload_argv(listen: str, models: dict[str, str], *extra: str) -> list[str]:
    """``edgefleet offload serve ...`` under this interpreter (tests, benchmarks)."""
    import sys

    flags = [f for name, path in models.items() for f in ("--model", f"{name}={path}")]
    return [
        sys.executable,
        "-m",
        "controlplane",
        "offload",
        "serve",
        "--listen",
        listen,
        *flags,
        *extra,
    ]


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {text!r}: expected HOST:PORT, e.g. 0.0.0.0:8000")
    return host.strip("[]") or "0.0.0.0", int(port)
