"""``edgefleet provision init|device|token|revoke|show``: the fleet CA and device identities.

``init`` works on files only: it creates the CA directory (CA, broker and control-plane
certificates, the broker's config, ACL and CRL) on the host that will run the control plane.
The other commands ask that control plane (``--server``), which holds the CA and the registry of
issued certificates, tokens and revocations (docs/provisioning.md). ``device`` makes the key on
this machine: only a CSR is sent, and the key goes into the bundle. A device id outside the
allowed set (``+``, ``#``, ``/``, ``$``, empty, too long, ``edgefleet-...``) is refused before any
request.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from controlplane.fleet.client import FleetClient, FleetError, add_client_flags
from controlplane.fleet.output import emit, table, when
from controlplane.rollouts.spec import parse_duration
from protocol.enrollment import build_csr, new_device_key
from provisioning import pki
from provisioning.bundle import DEFAULT_INSTALL_DIR, Bundle, write_bundle
from provisioning.errors import ProvisioningError
from provisioning.files import key_pem
from provisioning.names import CONTROL_PLANE_CN, check_device_id

DEFAULT_DIR = Path("pki")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")

    p = sub.add_parser("init", help="create the fleet CA, the broker's config and certificates")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where (default ./pki)")
    p.add_argument(
        "--broker-host",
        action="append",
        metavar="HOST",
        help="a DNS name or IP devices reach the broker at (repeatable; default localhost, "
        "127.0.0.1)",
    )
    p.add_argument(
        "--api-host",
        action="append",
        metavar="HOST",
        help="a name or IP of the control plane's HTTPS API (repeatable; default: the broker's)",
    )
    p.add_argument("--port", type=int, default=8883, help="the broker's TLS port (default 8883)")
    p.add_argument("--bind", default="0.0.0.0", help="the broker's listen address")
    p.add_argument(
        "--controlplane",
        action="append",
        metavar="NAME",
        help=f"a control plane's MQTT identity (repeatable; default {CONTROL_PLANE_CN}); give "
        "each replica its own: the broker makes the name its client id",
    )
    p.add_argument("--run-as", metavar="USER", help="the user mosquitto runs as (default: you)")
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.set_defaults(handler=init)

    p = sub.add_parser(
        "reissue", help="new certificates for the broker, the HTTPS API and the control plane"
    )
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the CA directory (./pki)")
    p.add_argument("--broker-host", action="append", metavar="HOST", help="as for init")
    p.add_argument("--api-host", action="append", metavar="HOST", help="as for init")
    p.add_argument("--controlplane", action="append", metavar="NAME", help="as for init")
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.set_defaults(handler=reissue)

    p = sub.add_parser("device", help="a device bundle: agent config, certificate, key, CA")
    p.add_argument("id", help="the device id")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    p.add_argument("--out", type=Path, help="a directory, or a .tar/.tar.gz (default ./ID)")
    p.add_argument("--broker", required=True, metavar="URL", help="mqtts://host:port for devices")
    p.add_argument(
        "--install-dir",
        default=DEFAULT_INSTALL_DIR,
        help=f"where the files go on the device (default {DEFAULT_INSTALL_DIR})",
    )
    p.add_argument(
        "--renew-url", metavar="URL", help="the control plane's https:// URL for renewal"
    )
    add_client_flags(p)
    p.set_defaults(handler=device)

    p = sub.add_parser("token", help="a one-time enrollment token for a device id")
    p.add_argument("id", help="the device id")
    p.add_argument("--ttl", default="1h", help="how long it works (default 1h; at most 30d)")
    add_client_flags(p)
    p.set_defaults(handler=token)

    p = sub.add_parser("revoke", help="revoke a device: CRL, broker reload, live session cut")
    p.add_argument("id", help="the device id")
    p.add_argument("--reason", default="", help="why (kept in the registry)")
    add_client_flags(p)
    p.set_defaults(handler=revoke)

    p = sub.add_parser("show", help="a device's certificates and whether it is revoked")
    p.add_argument("id", help="the device id")
    add_client_flags(p)
    p.set_defaults(handler=show)


def _device_id(raw: str) -> str:
    try:
        return check_device_id(raw)
    except ProvisioningError as exc:
        raise FleetError(str(exc)) from None


# -- init (files) ----------------------------------------------------------------------------


def init(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise FleetError(f"--port must be between 1 and 65535, not {args.port}")
    try:
        layout = pki.init(
            args.dir,
            broker_hosts=args.broker_host or ["localhost", "127.0.0.1"],
            api_hosts=args.api_host,
            port=args.port,
            bind=args.bind,
            control_planes=args.controlplane or [CONTROL_PLANE_CN],
            run_as=args.run_as,
        )
    except ProvisioningError as exc:
        raise FleetError(str(exc)) from None
    names = args.controlplane or [CONTROL_PLANE_CN]
    cert, key = layout.control_plane_cert(names[0])
    https_cert, https_key = layout.https_cert
    body = {
        "dir": str(layout.root),
        "ca": str(layout.ca_file),
        "crl": str(layout.crl_file),
        "broker_config": str(layout.broker_config),
        "broker_pid_file": str(layout.broker_pid_file),
        "controlplane_cert": str(cert),
        "controlplane_key": str(key),
        "https_cert": str(https_cert),
        "https_key": str(https_key),
    }
    emit(args.json, body, lambda b: _init_text(b, names[0], args.port))
    return 0


def _init_text(b: dict[str, str], name: str, port: int) -> str:
    return "\n".join(
        [
            f"fleet CA created in {b['dir']} (keep {b['dir']}/ca.key on this host only)",
            "",
            "run the broker:",
            f"  mosquitto -c {b['broker_config']}",
            "run the control plane against it (its MQTT identity is " + name + "):",
            f"  edgefleet serve --broker mqtts://localhost:{port} --data-dir DATA \\",
            f"    --pki-dir {b['dir']} --broker-pid-file {b['broker_pid_file']} \\",
            f"    --mqtt-ca-file {b['ca']} --mqtt-cert-file {b['controlplane_cert']} "
            f"--mqtt-key-file {b['controlplane_key']} \\",
            f"    --tls-cert-file {b['https_cert']} --tls-key-file {b['https_key']}",
            "then: edgefleet provision token ID, or edgefleet provision device ID --broker URL",
        ]
    )


def reissue(args: argparse.Namespace) -> int:
    names = args.controlplane or [CONTROL_PLANE_CN]
    try:
        layout = pki.reissue(
            args.dir,
            broker_hosts=args.broker_host or ["localhost", "127.0.0.1"],
            api_hosts=args.api_host,
            control_planes=names,
        )
    except ProvisioningError as exc:
        raise FleetError(str(exc)) from None
    files = layout.broker_files()
    body = {
        "broker_cert": str(files.cert_file),
        "https_cert": str(layout.https_cert[0]),
        "controlplane_certs": [str(layout.control_plane_cert(n)[0]) for n in names],
    }
    emit(
        args.json,
        body,
        lambda b: (
            f"new certificates: {b['broker_cert']}, {b['https_cert']}, "
            f"{', '.join(b['controlplane_certs'])}\nnow reload the broker "
            "(`systemctl reload mosquitto` or `kill -HUP PID`) and restart the control plane"
        ),
    )
    return 0


# -- through the control plane ---------------------------------------------------------------


def device(args: argparse.Namespace) -> int:
    device_id = _device_id(args.id)
    tags = _tags(args.tag)
    out: Path = args.out or Path(device_id)
    if out.exists():
        raise FleetError(f"{out} exists: pass another --out (a bundle is never overwritten)")
    key = new_device_key()  # made here: only the CSR travels
    with FleetClient.from_args(args) as client:
        issued = client.post(
            f"/api/v1/devices/{device_id}/certificate", {"csr": build_csr(device_id, key)}
        )
        release = client.get("/api/v1/keys/release")
    try:
        bundle = Bundle(
            device_id=device_id,
            broker_url=args.broker,
            cert_pem=issued["certificate"].encode(),
            key_pem=key_pem(key),
            ca_pem=issued["ca"].encode(),
            release_key=release["public_key"],
            tags=tags,
            install_dir=args.install_dir,
            renew_url=args.renew_url,
        )
        path = write_bundle(bundle, out)
    except ProvisioningError as exc:
        raise FleetError(str(exc)) from None
    body = {**{k: issued[k] for k in ("device_id", "serial", "not_after")}, "bundle": str(path)}
    emit(
        args.json,
        body,
        lambda b: (
            f"bundle for {b['device_id']} in {b['bundle']} (certificate {b['serial']}, "
            f"valid until {when(b['not_after'])}); it holds a private key: copy it to the device "
            "once, then delete it here"
        ),
    )
    return 0


def _tags(items: list[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FleetError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key] = value
    return tags


def token(args: argparse.Namespace) -> int:
    device_id = _device_id(args.id)
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise FleetError(f"--ttl: {exc}") from None
    with FleetClient.from_args(args) as client:
        body = client.post("/api/v1/enroll/tokens", {"device_id": device_id, "ttl_s": ttl})
    emit(
        args.json,
        body,
        lambda b: (
            f"{b['token']}\n(enrollment token for {b['device_id']}, works once, until "
            f"{when(b['expires_at'])}: edgefleet-agent enroll --server URL --token TOKEN)"
        ),
    )
    return 0


def revoke(args: argparse.Namespace) -> int:
    device_id = _device_id(args.id)
    with FleetClient.from_args(args) as client:
        body = client.post(f"/api/v1/devices/{device_id}/revoke", {"reason": args.reason})
    emit(args.json, body, _render_revocation)
    if body.get("broker_reloaded") and body.get("session_cut"):
        return 0
    print(
        f"edgefleet provision revoke: warning: {device_id} is revoked in the registry and the "
        f"CRL, but: {body.get('broker')}; {body.get('session')}",
        file=sys.stderr,
    )
    return 3


def _render_revocation(b: dict[str, Any]) -> str:
    return table(
        [
            ("device", b["device_id"]),
            ("revoked at", when(b["revoked_at"])),
            ("certificates", ", ".join(b["serials"]) or "-"),
            ("crl", b["crl"]),
            ("broker", b["broker"]),
            ("live session", b["session"]),
        ],
        ["field", "value"],
    )


def show(args: argparse.Namespace) -> int:
    device_id = _device_id(args.id)
    with FleetClient.from_args(args) as client:
        body = client.get(f"/api/v1/devices/{device_id}/identity")
    emit(args.json, body, _render_identity)
    return 0


def _render_identity(b: dict[str, Any]) -> str:
    head = f"{b['device_id']}: " + (
        f"REVOKED at {when(b['revoked_at'])} ({b['revoked_reason'] or 'no reason given'})"
        if b["revoked"]
        else "not revoked"
    )
    rows = [
        (c["serial"], c["via"], when(c["issued_at"]), when(c["not_after"]),
         when(c["revoked_at"]) if c["revoked_at"] else "-")
        for c in b["certificates"]
    ]  # fmt: skip
    if not rows:
        return head + "\nno certificates issued"
    return head + "\n" + table(rows, ["serial", "via", "issued", "expires", "revoked"])
