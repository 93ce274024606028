"""The fleet CLI: ``edgefleet models|rollout|devices ...`` over the control plane's REST API.

Every command finds the control plane from ``--server URL``, else ``EDGEFLEET_SERVER``, else
``http://127.0.0.1:8080``; prints a human table, or with ``--json`` the API's JSON unchanged (for
scripts); shows progress on stderr for long work; and ends with one line naming the problem and a
non-zero exit on any error (:class:`controlplane.fleet.client.FleetError`).

A command group is a module with ``configure(parser)`` that adds its subcommands, each with
``set_defaults(handler=...)``: see :mod:`controlplane.fleet.devices`.
"""
