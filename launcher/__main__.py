"""`python -m launcher`: the `launcher` command."""

from launcher.cli.commands import main

main()
