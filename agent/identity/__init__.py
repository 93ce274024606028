"""The device's identity: its TLS files (``[tls]``), enrollment with a one-time token
(``edgefleet-agent enroll``) and the renewal of its certificate before it expires."""
