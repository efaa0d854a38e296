"""``python -m revgan.cli``: the ``revgan`` command."""

from revgan.cli.main import main

main()
