"""Nodes: the VPN servers, their enrollment, tokens, health and the customers' server list."""
