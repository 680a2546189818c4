"""Test support: database servers, an SMTP catcher, factories. Not a test module."""
