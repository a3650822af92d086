"""The `cxraug` command line."""

from cxraug.cli.app import app, main

__all__ = ["app", "main"]
