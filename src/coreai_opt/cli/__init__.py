"""The ``coreai-sparsify`` command line, built on the public API only."""
