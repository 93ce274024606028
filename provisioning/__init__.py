"""Fleet identities: the CA, which names may be certified, the broker's configuration, device
bundles and enrollment tokens (docs/provisioning.md, docs/security.md).

``ca.py`` (the fleet CA and its CRL), ``names.py`` (pure: allowed device and service names),
``broker_config.py`` (Mosquitto 2.0's config and ACL), ``pki.py`` (the CA directory: ``init``,
``reissue``), ``bundle.py`` (device bundles), ``enrollment.py`` (one-time tokens), ``files.py``
(keys written 0600, atomically), ``errors.py`` (the ``ProvisioningError`` tree). It imports
neither the agent nor the control plane; the control plane and the CLI call it.
"""
