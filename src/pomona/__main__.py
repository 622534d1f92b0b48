"""`python -m pomona` runs the CLI."""

from pomona.cli.main import main

main()
