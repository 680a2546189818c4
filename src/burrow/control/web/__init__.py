"""The customer and admin web panels (a later issue): templates and routes that call services."""
