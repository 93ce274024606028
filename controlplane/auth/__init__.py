"""Operator accounts, roles, API tokens, console sessions and CSRF (docs/security.md).

- :mod:`~controlplane.auth.roles`: viewer < operator < admin; a token's scope (pure).
- :mod:`~controlplane.auth.policy`: route pattern + method -> the role it needs (one table).
- :mod:`~controlplane.auth.credentials`: Argon2id passwords, token and session secrets.
- :mod:`~controlplane.auth.identity`: :class:`Identity`, who a request comes from.
- :mod:`~controlplane.auth.accounts`: users, tokens and sessions in SQLite.
- :mod:`~controlplane.auth.authenticator`: credentials to identities through the store.
- :mod:`~controlplane.auth.middleware`: the one place requests are checked and audited.
- :mod:`~controlplane.auth.devices`: devices' signed requests on the routes they call.
- :mod:`~controlplane.auth.csrf`: the console's CSRF tokens (``csrf_field(request)``).
- :mod:`~controlplane.auth.login`, :mod:`~controlplane.auth.api`: ``/login``, ``/logout``,
  ``/api/v1/me``, ``/api/v1/users``, ``/api/v1/tokens``.
- :mod:`~controlplane.auth.local`: ``edgefleet users create --data-dir`` (the first admin).
- :mod:`~controlplane.auth.schema`: schema version 10.

Other modules learn who made a request from ``request.state.identity`` (always set by the
middleware; ``identity.user`` is None when nobody is authenticated) and the request's id from
``request.state.request_id``.
"""
