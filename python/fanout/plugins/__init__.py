"""Janus plugins: what a handle is for."""
