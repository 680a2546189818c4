"""Tests of the node agent (``burrow.node``); ``netns`` holds the namespace lab."""
