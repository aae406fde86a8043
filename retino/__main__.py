"""``python -m retino``: see ``retino.cli``."""

from retino.cli import main

main()
