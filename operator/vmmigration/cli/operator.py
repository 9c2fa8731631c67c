"""``vmmigration operator``: run the Kubernetes operator (kopf run)."""

from __future__ import annotations

import os
import sys

import click

from vmmigration.core.config import Settings


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--peering", default=None, metavar="NAME",
              help="kopf peering object (default VMMIGRATION_PEERING, 'vmmigration'); '' runs standalone.")
@click.argument("kopf_args", nargs=-1, type=click.UNPROCESSED)
def operator(peering: str | None, kopf_args: tuple[str, ...]) -> None:
    """Run the Kubernetes operator (kopf run), cluster-wide; extra arguments go to kopf.

    It uses the in-cluster ServiceAccount, else $KUBECONFIG. Settings come from
    VMMIGRATION_* variables (see README); a bad one stops it here.
    """
    settings = Settings.from_env()
    command = settings.kopf_command(python=sys.executable, peering=peering, extra=kopf_args)
    # Replace this process: signals (SIGTERM from the kubelet) then reach kopf directly.
    os.execv(sys.executable, command)
