"""`python -m launcher.cli`: the `launcher` command."""

from launcher.cli.commands import main

main()
