"""Test helpers for loggerhub backends: the shared conformance suite."""
