"""Device credentials for protocols other than WireGuard (OpenVPN, IKEv2)."""
