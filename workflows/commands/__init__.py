"""One module per ``msa`` verb: ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``."""
