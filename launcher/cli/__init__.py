"""The command line: thin Typer commands (commands) over the library, and the jobs behind them (jobs)."""

from launcher.cli.commands import app, main

__all__ = ["app", "main"]
