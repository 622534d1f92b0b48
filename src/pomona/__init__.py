"""Pomona: self-hosted enrollment and management for Apple mobile devices."""

__version__ = "0.1.0"
