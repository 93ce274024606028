"""The contract between the agent and the control plane.

Both sides import this package; it imports neither. It holds the MQTT topic names
(:mod:`protocol.topics`), the wire messages (:mod:`protocol.messages`), the model
manifest (:mod:`protocol.manifest`) and the one module that talks to an MQTT broker
(:mod:`protocol.mqtt`).
"""

SCHEMA_VERSION = 1
"""Version of the wire messages. Readers accept any message whose major version they know."""
