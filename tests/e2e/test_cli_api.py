"""The user's path through the API: `vmmigration get|move|abort|watch`, and the same verbs as
`kubectl vmm`, run as a shell runs them against the real API server, the operator and guests."""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from vmtestbed.controlplane import ControlPlane
from vmtestbed.testbed import Sandbox

from vmmigration.cli.common import EXIT_ABORTED

from ..conftest import GuestWatch
from .conftest import Kubectl, Operator, migrating, running_on

# The venv's bin holds both entry points, vmmigration and kubectl-vmm.
BIN = Path(sys.executable).parent
# A guest that dirties memory faster than a 2 MiB/s link copies it: the move is
# still in flight when it is aborted.
ENDLESS = {"mode": "Live", "policy": {"bandwidthMiBPerSecond": 2, "progressTimeoutSeconds": 600,
                                      "onTimeout": "Abort", "hardTimeoutSeconds": 900}}
HUMAN_SIZE = re.compile(r"^\d+(\.\d)?[KMGT]i$")


def shell(plane: ControlPlane, *command: str, kubeconfig: Path | None = None
          ) -> subprocess.Popen[str]:
    """A command as a user's shell starts it: KUBECONFIG set, the venv and the test bed's kubectl on PATH."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig or plane.admin_kubeconfig),
           "PATH": os.pathsep.join((str(BIN), str(plane.bin_dir), os.environ.get("PATH", "")))}
    return subprocess.Popen(list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def run(plane: ControlPlane, *command: str, kubeconfig: Path | None = None,
        timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
    process = shell(plane, *command, kubeconfig=kubeconfig)
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def vmmigration(plane: ControlPlane, *args: str, kubeconfig: Path | None = None
                ) -> subprocess.CompletedProcess[str]:
    return run(plane, str(BIN / "vmmigration"), *args, kubeconfig=kubeconfig)


def kubectl_vmm(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    """Through kubectl itself, which finds kubectl-vmm on PATH."""
    return run(plane, str(plane.bin_dir / "kubectl"), "vmm", *args)


def lines_until(process: subprocess.Popen[str], pattern: str, *, timeout: float) -> str:
    """What a running command prints up to its first line that matches, waited for without blocking
    past the timeout. It reads the pipe's descriptor, not the text wrapper, so nothing sits in a
    buffer that select cannot see, and communicate() later gets exactly the rest."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not re.search(pattern.encode(), seen, re.MULTILINE):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise AssertionError(f"no line like {pattern!r} in {timeout} s: {seen!r}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"the command ended before a line like {pattern!r}: {seen!r}")
            seen += chunk
    return seen.decode()


def rows(table: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in table.splitlines()[1:] if line.strip()}


def test_a_domain_moved_by_the_cli_and_back_by_kubectl_vmm_keeps_one_vmmigration_listed_in_human_units(
        control_plane: ControlPlane, kubectl: Kubectl, sandbox: Sandbox,
        boot: Callable[..., GuestWatch], name: str, operator: Operator) -> None:
    watch = boot(name)
    try:
        moved = vmmigration(control_plane, "move", name, "--to", "kvm-b", "--mode", "live", "--wait",
                            "--timeout", "120")
        assert moved.returncode == 0, moved.stderr
        lines = moved.stdout.splitlines()
        assert lines[0] == f"vmmigration default/{name} created: {name} → kvm-b"
        assert lines[-1].startswith(f"default/{name}: placed on kvm-b (Live, downtime ")
        assert running_on(sandbox, name) == ["kvm-b"]

        back = kubectl_vmm(control_plane, "move", name, "--to", "kvm-a", "--wait", "--timeout", "120")
        assert back.returncode == 0, back.stderr
        assert back.stdout.splitlines()[0] == f"vmmigration default/{name} patched: {name} → kvm-a"
        assert back.stdout.splitlines()[-1].startswith(f"default/{name}: placed on kvm-a")
        assert running_on(sandbox, name) == ["kvm-a"]
        watch.assert_kept_running(after=watch.count())
        listed = json.loads(kubectl("get", "vmm", "-n", "default", "-o", "json").stdout)["items"]
        assert [i["metadata"]["name"] for i in listed if i["spec"]["domain"] == name] == [name]

        table = kubectl_vmm(control_plane, "get", "vmm")
        assert table.returncode == 0, table.stderr
        row = rows(table.stdout)[name]
        assert row[1:5] == [name, "kvm-a", "kvm-a", "Placed"] and row[6].endswith("ms"), row
    finally:
        kubectl("delete", "vmm", name, "-n", "default", "--ignore-not-found", "--wait=true", check=False)

    hypervisors = vmmigration(control_plane, "get", "hv")
    assert hypervisors.returncode == 0, hypervisors.stderr
    by_name = rows(hypervisors.stdout)
    for host in ("kvm-a", "kvm-b", "kvm-c"):
        assert by_name[host][1] == "True" and HUMAN_SIZE.match(by_name[host][4]), by_name[host]
    # kubectl's own table shows the operator's human figure, not a byte count.
    printed = rows(kubectl("get", "hv").stdout)
    header = kubectl("get", "hv").stdout.splitlines()[0].split()
    assert HUMAN_SIZE.match(printed["kvm-a"][header.index("FREE")]), printed["kvm-a"]


def test_abort_stops_a_move_in_flight_and_a_watch_of_it_ends_with_the_aborted_exit_code(
        control_plane: ControlPlane, kubectl: Kubectl, sandbox: Sandbox,
        boot: Callable[..., GuestWatch], name: str, vmm: Callable[..., str]) -> None:
    watch = boot(name, dirty_mib=48, dirty_rate_mib=48)
    vmm(name, domain=name, targetHypervisor="kvm-b", **ENDLESS)
    migrating(kubectl, name)
    watcher = shell(control_plane, str(BIN / "vmmigration"), "watch", name, "--timeout", "120")
    try:
        # The watch must have read the move in flight before the abort bumps the generation;
        # a watch that starts later only ever sees the abort (that raced once in CI).
        first = lines_until(watcher, rf"^default/{name}: \d+% kvm-a → kvm-b │ ", timeout=60)
        aborted = kubectl_vmm(control_plane, "abort", name, "--wait", "--timeout", "60")
        assert aborted.returncode == 0, aborted.stderr
        lines = aborted.stdout.splitlines()
        assert lines[0] == f"vmmigration default/{name}: abort requested"
        # The status of the move in flight is not taken for the abort's: the operator sees it first.
        assert lines[1] == f"default/{name}: waiting for the operator to see generation 2"
        assert lines[-1] == f"default/{name}: aborted; the domain stays on kvm-a"
        rest, err = watcher.communicate(timeout=30)
        out = first + rest
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == EXIT_ABORTED, (out, err)
    assert re.search(rf"^default/{name}: \d+% kvm-a → kvm-b │ ", out, re.MULTILINE), out
    assert err == f"error: default/{name}: aborted; the domain stays on kvm-a\n"
    assert running_on(sandbox, name) == ["kvm-a"]
    watch.assert_kept_running(after=watch.count())


def test_a_forbidden_user_an_invalid_spec_and_a_missing_object_each_get_one_line_and_exit_1(
        control_plane: ControlPlane, kubectl: Kubectl, tmp_path: Path) -> None:
    nobody = control_plane.service_account_kubeconfig(namespace="default", name="vmm-nobody",
                                                      path=tmp_path / "nobody.kubeconfig")
    for args in (["get", "vmm"], ["move", "web-01", "--to", "kvm-b"], ["abort", "web-01"]):
        refused = vmmigration(control_plane, *args, kubeconfig=nobody)
        assert (refused.returncode, refused.stdout) == (1, ""), refused
        assert re.fullmatch(r'error: vmmigrations\.vmmigration\.dev (".*" )?is forbidden: User '
                            r'"system:serviceaccount:default:vmm-nobody" cannot \w+ resource "vmmigrations" '
                            r'in API group "vmmigration\.dev" in the namespace "default"\n', refused.stderr), refused

    # The CRD's schema refuses the domain name (the CLI leaves that check to the API server).
    invalid = vmmigration(control_plane, "move", "bad;name", "--selector", "zone=lab")
    assert (invalid.returncode, invalid.stdout) == (1, "")
    assert invalid.stderr.count("\n") == 1 and invalid.stderr.startswith(
        'error: VMMigration.vmmigration.dev "bad-name" is invalid: spec.domain'), invalid.stderr
    assert not kubectl.exists("vmm", "bad-name")

    missing = vmmigration(control_plane, "watch", "nope")
    assert (missing.returncode, missing.stderr) == (
        1, "error: no VMMigration named nope, or managing a domain nope, in namespace default\n")
