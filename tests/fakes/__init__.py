"""Test doubles that speak real wire protocols (see consul_fake.py: a FAKE Consul HTTP API)."""
