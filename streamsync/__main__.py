"""`python -m streamsync` runs the CLI."""

from streamsync.cli import main

main()
