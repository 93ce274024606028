"""Device identities on the control plane: enrollment, renewal, revocation (docs/provisioning.md).

``schema.py`` (migration v9: tokens, certificates, revoked devices), ``registry.py`` (the SQL,
run on the store's writer or reader threads), ``service.py`` (:class:`Identities`: the CA and
the registry together), ``broker.py`` (telling the broker about a revocation and cutting the
revoked device's live session), ``api.py`` (the routes). The CA itself is :mod:`provisioning`.
"""
