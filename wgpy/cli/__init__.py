"""The ``wgpy`` command line; the only part of wgpy that prints."""

from .environment import CommandError, Environment, ExitStatus
from .main import main, run

__all__ = ["CommandError", "Environment", "ExitStatus", "main", "run"]
