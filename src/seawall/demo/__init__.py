"""Demonstrations run by ``seawall demo``."""
