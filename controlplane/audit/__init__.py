"""The audit log (docs/security.md#audit-log): an append-only table with one record per mutating
request (written by :mod:`controlplane.auth.middleware`) and per local account action.

- :mod:`~controlplane.audit.schema`: the table and the triggers that refuse UPDATE and DELETE.
- :mod:`~controlplane.audit.log`: a record, where a request came from, appending, paged reads.
- :mod:`~controlplane.audit.api`: ``GET /api/v1/audit``.
"""
