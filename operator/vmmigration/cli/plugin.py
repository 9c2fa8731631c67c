"""``kubectl vmm …``: the API verbs as a kubectl plugin, and ``domains``, which lists a
Hypervisor's domains from its libvirt (so it needs libvirt's client here).

kubectl runs an executable named ``kubectl-vmm`` found on PATH for ``kubectl vmm``
and passes it the rest of the command line as it is; its own flags
(``--kubeconfig``, ``-n``) therefore go after ``vmm``. KUBECONFIG is inherited.
"""

from __future__ import annotations

import click

from vmmigration.cli import abort, delete, domains, drain, get, move, pool, watch


@click.group()
def kubectl_vmm() -> None:
    """Place libvirt/KVM VMs through their VMMigrations (the vmmigration operator's verbs)."""


for command in (get.get, move.move, abort.abort, watch.watch, delete.delete, drain.drain, drain.undrain,
                pool.pool, domains.domains):
    kubectl_vmm.add_command(command)
