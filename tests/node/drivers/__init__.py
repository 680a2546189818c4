"""Tests of the node agent's drivers; the ``netns``-marked ones run real wireguard-go and nft."""
