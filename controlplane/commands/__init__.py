"""Remote commands to devices (``edgefleet devices exec``; docs/operations.md#remote-diagnostics).

- :mod:`.requester`: sends a request over MQTT (v5 response topic, correlation data, message
  expiry; the same in the payload for 3.1.1) and awaits the device's reply with a timeout.
- :mod:`.records`: the ``commands`` table (schema version 6), one row per command with who sent
  it, when, and what came back: the audit trail.
- :mod:`.api`: ``POST`` and ``GET /api/v1/devices/{id}/commands``.
"""
