"""``python -m seawall`` runs the command-line tool."""

from seawall.cli import main

main()
