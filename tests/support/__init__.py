"""Test support shared by several test packages: real backend processes on loopback."""
