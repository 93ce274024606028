"""The edgefleet agent: the daemon a field device runs (see docs/agent.md)."""

__version__ = "0.1.0"
