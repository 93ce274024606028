"""``edgefleet-agent enroll``: get this device's certificate with a one-time token.

The key is generated here and never leaves the device: only a CSR is sent, over HTTPS
(``--server https://...``; the server's certificate is checked against ``--server-ca``, else
``tls.ca_file`` if it exists, else the system's CAs). The certificate, its key (0600) and the fleet
CA go to the ``[tls]`` files of the configuration, or to ``DATA_DIR/identity/`` when those are not
set; the command then prints the ``[tls]`` lines that point the agent at them.

The token may come from ``--token`` or, to keep it out of the process list, from
``$EDGEFLEET_ENROLL_TOKEN``. Every failure is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.config import AgentSettings, add_flags, load_settings
from agent.errors import AgentError, ConfigError
from agent.identity.client import post
from agent.identity.files import identity_paths, write_file, write_key
from protocol.enrollment import IssuedCertificate, build_csr, new_device_key
from protocol.errors import ProtocolError

TOKEN_ENV = "EDGEFLEET_ENROLL_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefleet-agent enroll",
        description="Get this device's certificate from the control plane with a one-time "
        "enrollment token (`edgefleet provision token ID`). The private key is made here and "
        "never sent.",
    )
    parser.add_argument("--server", required=True, metavar="URL", help="the control plane")
    parser.add_argument("--token", help=f"the enrollment token (default: ${TOKEN_ENV})")
    parser.add_argument(
        "--server-ca",
        type=Path,
        metavar="PEM",
        help="CA to check the server's HTTPS certificate with (default: tls.ca_file if it "
        "exists, else the system's CAs)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing certificate")
    add_flags(parser)
    return parser


async def enroll(settings: AgentSettings, server: str, token: str, server_ca: Path | None,
                 force: bool = False) -> tuple[IssuedCertificate, Path, Path, Path]:  # fmt: skip
    """Enroll and write the files; return the certificate and the (key, cert, CA) paths."""
    key_path, cert_path, ca_path = identity_paths(settings)
    if cert_path.exists() and not force:
        raise ConfigError(f"{cert_path} exists: this device is enrolled (pass --force to replace)")
    if server_ca is None and ca_path.exists():
        server_ca = ca_path
    key = new_device_key()
    body = {"token": token, "csr": build_csr(settings.device_id, key)}
    issued = await post(server, "/api/v1/enroll", body, server_ca)
    if issued.device_id != settings.device_id:
        raise AgentError(f"the control plane issued a certificate for {issued.device_id!r}")
    write_key(key_path, key)
    write_file(cert_path, issued.certificate.encode(), 0o644)
    write_file(ca_path, issued.ca.encode(), 0o644)
    return issued, key_path, cert_path, ca_path


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    token = args.token or os.environ.get(TOKEN_ENV)
    try:
        if not token:
            raise ConfigError(f"no token: pass --token or set ${TOKEN_ENV}")
        if not args.server.startswith(("http://", "https://")):
            raise ConfigError(f"--server {args.server!r}: expected an https:// URL")
        settings = load_settings(args)
        issued, key_path, cert_path, ca_path = asyncio.run(
            enroll(settings, args.server, token, args.server_ca, args.force)
        )
    except (AgentError, ProtocolError, ValueError) as exc:
        print(f"edgefleet-agent enroll: error: {exc}", file=sys.stderr)
        return 2
    print(f"enrolled {issued.device_id}: certificate {issued.serial} in {cert_path}")
    if settings.tls.cert_file is None:
        print(
            "add to the agent's configuration:\n[tls]\n"
            f'ca_file = "{ca_path}"\ncert_file = "{cert_path}"\nkey_file = "{key_path}"\n'
            f'renew_url = "{args.server.rstrip("/")}"'
        )
    if args.server.startswith("http://"):
        print("warning: enrolled over plain HTTP; use HTTPS in production", file=sys.stderr)
    return 0
