"""The ``revgan`` command line: one sub-command per job (``revgan.cli.main``)."""
