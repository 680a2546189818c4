"""burrow: the platform a VPN provider runs.

Three rooms that never mix: ``burrow.wire`` (the node API contract),
``burrow.control`` (the control plane) and ``burrow.node`` (the node agent).
"""

__version__ = "0.1.0"
