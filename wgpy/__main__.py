"""``python -m wgpy``: the same as the ``wgpy`` command."""

from wgpy.cli.commands import run

if __name__ == "__main__":
    run()
