"""Drivers: the only code of the node agent that touches the host.

Each driver sits behind a ``Protocol`` so the agent's loop can be tested with
fakes: ``wireguard`` (wireguard-go and its UAPI socket, see ``uapi``) and
``nftables`` (NAT, port blocks, client isolation, blocked peers).
"""
