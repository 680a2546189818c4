"""Payment providers behind one interface and one registry (``registry.py``).

A leaf of the control plane: imports the models and the settings only, so billing,
subscriptions and refunds all look providers up here and never through each other.
"""
