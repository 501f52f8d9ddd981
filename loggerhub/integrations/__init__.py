"""Adapters that log a framework's training to loggerhub; each imports its framework only when used."""
