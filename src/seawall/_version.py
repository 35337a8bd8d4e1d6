"""The installed version of seawall."""

__version__ = "0.1.0"
