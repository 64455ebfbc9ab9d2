"""``python -m kmdb_async`` runs the CLI."""

from .cli import main

main()
