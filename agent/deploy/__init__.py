"""Deployments on the device: signed desired state in, two model slots, verified swap out.

The control plane publishes a signed :class:`~protocol.release.Desired` document, retained, on the
device's ``desired`` topic. The agent checks it (:mod:`.decisions`, pure), downloads the artifact
resumably (:mod:`.download`) into a slot on disk (:mod:`.slots`; with its CPU fallback for an Edge
TPU target, :mod:`.artifacts`), verifies and smoke-tests it (:mod:`.smoke`), optionally runs it in
shadow beside the live model (:mod:`.shadow`), then swaps it in and reports each step
(:mod:`.deployer`). See docs/agent.md, "Deployments".

Errors::

    AgentError
     └── DeployError          a deployment step that failed (the report's detail is its message)
          └── DownloadError   the artifact could not be fetched (after retries)
"""

from agent.errors import AgentError


class DeployError(AgentError):
    """A deployment step that failed; its message is the report's ``detail``."""


class DownloadError(DeployError):
    """The artifact could not be fetched."""


__all__ = ["DeployError", "DownloadError"]
