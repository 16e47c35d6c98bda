"""The ``llem`` subcommands that are not part of a lower layer: each module has a ``main_*(argv) -> int``."""
