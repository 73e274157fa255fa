"""The ``minigen`` command: see ``app`` for the subcommands."""
from .app import main

__all__ = ["main"]
