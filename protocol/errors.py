"""Exceptions raised by the protocol package.

ProtocolError
 ├── InvalidDeviceId     a device id outside ``[A-Za-z0-9_.-]{1,64}``
 ├── InvalidTopic        a topic that is not one of ours
 └── InvalidMessage      a payload that does not parse as the expected wire message
MQTTError               (in protocol.mqtt) broker connection and delivery failures
"""


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`protocol`."""


class InvalidDeviceId(ProtocolError, ValueError):
    pass


class InvalidTopic(ProtocolError, ValueError):
    pass


class InvalidMessage(ProtocolError, ValueError):
    pass
