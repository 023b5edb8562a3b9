"""``python -m coreai_opt.cli.compress``: the ``coreai-compress`` command."""

from coreai_opt.cli.main import compress_entry

if __name__ == "__main__":
    compress_entry()
