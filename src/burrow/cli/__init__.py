"""The ``burrow`` command line (Typer). Calls services; never SQL of its own."""
