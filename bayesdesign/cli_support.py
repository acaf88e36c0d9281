"""What every ``bayesdesign`` command group shares: input errors as exit code 2, and when to
show progress bars."""

from __future__ import annotations

import sys

import click

__all__ = ["InputErrorGroup", "show_progress"]


class InputErrorGroup(click.Group):
    """Turn the package's input errors (``ValueError``, ``FileNotFoundError``, whose messages name
    the argument, file or column) into exit code 2 with a one-line message."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ValueError, FileNotFoundError) as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)


def show_progress(flag: bool | None) -> bool:
    """``--progress``/``--no-progress`` when given, else only on an interactive terminal."""
    return sys.stderr.isatty() if flag is None else flag
