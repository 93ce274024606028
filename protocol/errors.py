"""Exceptions raised by the protocol package.

ProtocolError
 ├── InvalidDeviceId     a device id outside ``[A-Za-z0-9_.-]{1,64}``
 ├── InvalidTopic        a topic that is not one of ours
 └── InvalidMessage      a payload that does not parse as the expected wire message
 └── MQTTError           a broker connection or delivery failure (raised by protocol.mqtt)
      ├── NotConnected    no connection now (a publish never queues silently), or none in time
      ├── PublishTimeout  no PUBACK within the timeout: a failure, never a success
      ├── PublishRefused  the broker answered with a failure reason code (e.g. not authorized)
      └── NoSubscribers   (only when asked for) v5 PUBACK "no matching subscribers"
"""


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`protocol`."""


class InvalidDeviceId(ProtocolError, ValueError):
    pass


class InvalidTopic(ProtocolError, ValueError):
    pass


class InvalidMessage(ProtocolError, ValueError):
    pass


class MQTTError(ProtocolError):
    """Base class of the broker connection and delivery failures."""


class NotConnected(MQTTError):
    pass


class PublishTimeout(MQTTError):
    pass


class PublishRefused(MQTTError):
    def __init__(self, message: str, reason_code: int) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class NoSubscribers(MQTTError):
    """The broker took the message but no subscription matched it, so nobody will get it.

    Mosquitto without persistence forgets every session when it restarts: until the control
    plane has subscribed again, a result batch would be acknowledged and lost.
    """
