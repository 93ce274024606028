"""The alert engine (docs/operations.md#alerts): per-device rules evaluated by the control plane,
alerts that fire, deduplicate and resolve by themselves, and webhook notifications.

| module | what |
|---|---|
| ``rules.py`` | each rule as a pure function of a device snapshot and its parameters |
| ``config.py`` | the defaults and the alerts file's per-selection overrides |
| ``decisions.py`` | fire / keep / resolve as a pure function of open alerts and evaluations |
| ``schema.py`` | schema version 7: ``alerts``, ``alert_pending``, ``alert_notifications`` |
| ``queries.py`` | the snapshots read from the store, the decisions written, the list queries |
| ``engine.py`` | the task that evaluates the fleet every ``alerts_interval_s`` |
| ``webhook.py`` | the ``alert_webhooks`` entries (secret URLs) and the bodies, JSON and Slack |
| ``notify.py`` | delivery with retries from the durable queue, as a task of its own |
| ``api.py`` | ``GET /api/v1/alerts``, ``/api/v1/alerts/rules``, ``/api/v1/devices/{id}/alerts`` |
"""
