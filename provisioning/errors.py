"""Exceptions raised by the provisioning package.

ProvisioningError
 ├── InvalidName            a device id or certificate name outside the allowed set (names.py)
 ├── PKIError               the CA directory is missing, unreadable, or unsafe (a key others
 │                            may read), or a file in it does not parse
 ├── CertificateRefused     a CSR or a certificate that the CA will not sign or accept: a CSR
 │    │                       whose signature fails or that names another id, a certificate
 │    │                       from another CA or expired (``status``: the HTTP status, 403)
 │    ├── MalformedPEM        a CSR or certificate that does not even parse (400)
 │    └── DeviceRevoked       the device id, or this certificate, is revoked (403)
 ├── TokenRefused           an enrollment token that does not work (``status``: 401 or 403)
 │    ├── TokenUnknown        no such token (401)
 │    ├── TokenExpired        past its expiry (401)
 │    └── TokenUsed           already used once (403)
 └── BundleError            a device bundle that cannot be written (the target exists, ...)

Foreign exceptions (``cryptography``'s ``ValueError``, ``OSError``) are translated into these
where they are raised, so the control plane and the CLI only ever handle this tree.
"""


class ProvisioningError(Exception):
    """Base class of every error the provisioning package raises on purpose."""


class InvalidName(ProvisioningError, ValueError):
    pass


class PKIError(ProvisioningError):
    pass


class CertificateRefused(ProvisioningError):
    status = 403


class MalformedPEM(CertificateRefused):
    status = 400


class DeviceRevoked(CertificateRefused):
    status = 403


class TokenRefused(ProvisioningError):
    """An enrollment token that does not work; ``status`` is the HTTP status to answer."""

    status = 401


class TokenUnknown(TokenRefused):
    status = 401


class TokenExpired(TokenRefused):
    status = 401


class TokenUsed(TokenRefused):
    status = 403


class BundleError(ProvisioningError):
    pass
