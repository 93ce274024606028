"""Offload to a cloud tier over the Open Inference Protocol (docs/agent.md, "Offload").

``config`` (the per-model settings), ``policy`` (local or cloud: pure), ``retry`` (backoff and
deadline split: pure), ``breaker`` (one circuit breaker per endpoint), ``client`` (the OIP REST
client), ``answers`` (a cloud reply to a :class:`~protocol.messages.CloudAnswer`: pure),
``deferred`` (the SQLite queue of cases waiting for the cloud) and ``offloader`` (all of it in the
request path and the background drain).
"""
