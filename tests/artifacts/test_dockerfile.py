"""The operator image, built for real from the Dockerfile users build: scripts/build-image
builds it with podman on a Debian base made by mmdebstrap (no registry needed), and these
tests run it the way the chart does, as UID 65532 on a read-only root."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .conftest import CHART, ROOT, tool

DOCKERFILE = (ROOT / "Dockerfile").read_text()
# As scripts/build-image runs podman here: runc, since crun refuses a hybrid cgroup
# layout; limits below the hard ones, since raising a limit needs CAP_SYS_RESOURCE.
RUNTIME = ["--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


@dataclass(frozen=True)
class Image:
    ref: str
    archive: Path


@pytest.fixture(scope="session")
def image() -> Image:
    for name in ("podman", "runc", "mmdebstrap"):
        tool(name)
    script = str(ROOT / "scripts" / "build-image")
    # Cached by what goes into the image: instant unless the code changed.
    built = subprocess.run([script, "--ref"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-4000:]
    archive = subprocess.run([script], check=True, capture_output=True, text=True)
    return Image(ref=built.stdout.splitlines()[-1], archive=Path(archive.stdout.splitlines()[-1]))


def run(image: Image, *command: str, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
    """The image as the chart runs it: its own user, a read-only root, /tmp writable."""
    override = ["--entrypoint", entrypoint] if entrypoint else []
    return subprocess.run(["podman", *RUNTIME, "run", "--rm", "--read-only", "--tmpfs", "/tmp",
                           "--network", "none", *LIMITS, *override, image.ref, *command],
                          capture_output=True, text=True, timeout=120)


def test_the_dockerfile_builds_on_the_python_image_unless_told_another_base() -> None:
    first_from = DOCKERFILE.index("\nFROM ")
    assert re.search(r"^ARG BASE=python:3\.11-slim-bookworm$", DOCKERFILE[:first_from], flags=re.MULTILINE)
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert froms == ["${BASE}", "${BASE}"]
    # Debian's own base has python3 only; `python` exists in the python image alone.
    commands = [line for line in DOCKERFILE.splitlines() if not line.startswith("#")]
    assert not [line for line in commands if re.search(r"(^|[\s&;])python\s", line)]


def test_pip_sees_a_ca_bundle_only_through_an_optional_secret() -> None:
    # `docker build` without --secret must still work: the secret is never required.
    pip_runs = [step for step in re.findall(r"^RUN (?:.+\\\n)*.+$", DOCKERFILE, flags=re.MULTILINE)
                if "pip install" in step]
    assert pip_runs
    for pip_run in pip_runs:
        assert pip_run.startswith("RUN --mount=type=secret,id=pipcert \\"), pip_run
        assert "if [ -s /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi" in pip_run
        assert "--no-cache-dir" in pip_run
    assert "required=true" not in DOCKERFILE


def test_the_image_runs_the_operator_as_the_non_root_user_on_the_charts_ports() -> None:
    assert re.search(r"^USER 65532:65532$", DOCKERFILE, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["vmmigration"]' in DOCKERFILE and 'CMD ["operator"]' in DOCKERFILE
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 65532
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", DOCKERFILE, flags=re.MULTILINE)
               for p in line.split()}
    assert exposed == {values["metrics"]["port"], values["health"]["port"]}


def test_the_image_runs_as_the_non_root_user_on_a_read_only_root(image: Image) -> None:
    result = run(image, "-c", "id -u; id -g; echo $HOME; touch /probe", entrypoint="sh")
    uid, gid, home, *_ = result.stdout.split()
    assert (uid, gid, home) == ("65532", "65532", "/tmp")
    assert "Read-only file system" in result.stderr


def test_the_image_answers_vmmigration_help_and_has_the_operator_command(image: Image) -> None:
    result = run(image, "--help")
    assert result.returncode == 0, result.stderr
    assert "operator" in result.stdout and "migrate" in result.stdout
    # What `vmmigration operator` hands to kopf must import: kopf and the handlers module.
    handlers = run(image, "-c", "import kopf, vmmigration.adapters.kube.handlers", entrypoint="python3")
    assert handlers.returncode == 0, handlers.stderr


def test_the_image_loads_libvirts_client_library_and_connects_to_its_test_driver(image: Image) -> None:
    script = ("import libvirt; conn = libvirt.open('test:///default'); "
              "print(conn.lookupByID(1).name())")
    result = run(image, "-c", script, entrypoint="python3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "test"


def test_the_image_holds_no_compiler_no_pip_and_no_test_bed(image: Image) -> None:
    script = ("for t in gcc cc c++ cpp ld as make pip pip3; do command -v $t; done; "
              "find /usr/include /var/lib/apt/lists -type f 2>/dev/null; "
              "python3 -c 'import importlib.util as u; "
              "print(*[m for m in (\"pip\", \"setuptools\", \"vmtestbed\", \"pytest\") if u.find_spec(m)])'")
    result = run(image, "-c", script, entrypoint="sh")
    assert result.stdout.split() == [], result.stdout


def test_the_image_archive_imports_into_containerds_kubernetes_namespace(image: Image) -> None:
    for name in ("containerd", "ctr"):
        tool(name)
    with containerd() as socket:
        ctr = ["ctr", "--address", str(socket), "--namespace", "k8s.io", "images"]
        imported = subprocess.run([*ctr, "import", str(image.archive)], capture_output=True, text=True)
        assert imported.returncode == 0, imported.stderr
        listed = subprocess.run([*ctr, "ls", "--quiet"], check=True, capture_output=True, text=True)
        assert image.ref in listed.stdout.split()
    assert (image.archive.parent / f"{image.archive.stem}.ref").read_text().strip() == image.ref


@contextlib.contextmanager
def containerd() -> Iterator[Path]:
    """A throwaway containerd of our own: socket, root and state under one short /tmp path
    (a Unix socket's path is limited to about 100 characters); only what an import needs."""
    home = Path(tempfile.mkdtemp(prefix="ctrd.", dir="/tmp"))
    socket = home / "sock"
    (home / "config.toml").write_text(
        f'version = 2\nroot = "{home}/root"\nstate = "{home}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = "{socket}.ttrpc"\n')
    log = home / "log"
    with log.open("w") as out:
        process = subprocess.Popen(["containerd", "--config", str(home / "config.toml")],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["ctr", "--address", str(socket), "version"],
                             capture_output=True).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("containerd did not start: " + log.read_text()[-2000:])
            time.sleep(0.2)
        yield socket
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(home, ignore_errors=True)
