"""The control plane: accounts, plans, subscriptions, devices, nodes and the node API.

May import ``burrow.wire``; never ``burrow.node`` or ``burrow.cli``.
"""
