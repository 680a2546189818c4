"""The privacy center: data export, email change, erasure, consents and privacy requests."""
