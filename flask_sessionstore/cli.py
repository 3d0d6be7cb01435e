"""``flask users``, ``flask roles`` and ``flask sessions`` commands."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from .datastore import utcnow
from .extension import current_datastore

__all__ = ["register_commands"]

sessions_cli = AppGroup("sessions", help="Inspect and end server-side sessions.")


@sessions_cli.command("cleanup")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=1))
def cleanup_command(batch_size: int) -> None:
    """Delete expired sessions, BATCH_SIZE rows at a time."""
    count = current_datastore.delete_expired(batch_size=batch_size)
    click.echo(f"Deleted {count} expired session(s) as of {utcnow():%Y-%m-%d %H:%M:%S} UTC.")


def register_commands(app: Flask) -> None:
    """Add the command groups to ``app.cli``."""
    app.cli.add_command(sessions_cli)
