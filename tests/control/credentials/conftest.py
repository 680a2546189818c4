"""The devices tests' customers and nodes serve the credentials tests too."""

from tests.control.devices.conftest import make_customer, make_node

__all__ = ["make_customer", "make_node"]
