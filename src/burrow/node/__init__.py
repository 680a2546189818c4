"""The node agent: keeps one VPN node's data plane equal to the control plane's desired state.

``reconcile`` plans (pure), ``drivers`` act (wireguard-go through its socket,
nftables). This package imports ``burrow.wire`` and never ``burrow.control``.
"""
