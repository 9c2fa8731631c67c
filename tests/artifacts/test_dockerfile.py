"""The operator image's Dockerfile. No Docker engine here, so its build step is rehearsed:
the files it copies are enough to build the package, and the image agrees with the chart."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from .conftest import CHART, ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_the_files_the_dockerfile_copies_are_enough_to_build_the_package(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    copies = re.findall(r"^COPY (?!--from)(.+) (/src/\S*)$", DOCKERFILE, flags=re.MULTILINE)
    assert copies, "the build stage copies nothing"
    for sources, destination in copies:
        for source in sources.split():
            # COPY a b /src/ puts each into /src; COPY dir /src/dir names the target.
            target = src / Path(source).name if destination.endswith("/") else src / destination.removeprefix("/src/")
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target)
            else:
                shutil.copy(ROOT / source, target)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp_path / "wheel"), str(src)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((tmp_path / "wheel").glob("vmmigration-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "vmmigration/adapters/kube/handlers.py" in names and "vmmigration/cli/__main__.py" in names
    # The image is the product: the test bed (daemons, guest builder, control plane) stays out.
    assert not [n for n in names if "testbed" in n or n.endswith(".c")], names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "vmmigration = vmmigration.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_image_runs_the_operator_as_the_non_root_user_on_the_charts_ports() -> None:
    assert re.search(r"^USER 65532:65532$", DOCKERFILE, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["vmmigration"]' in DOCKERFILE and 'CMD ["operator"]' in DOCKERFILE
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 65532
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", DOCKERFILE, flags=re.MULTILINE)
               for p in line.split()}
    assert exposed == {values["metrics"]["port"], values["health"]["port"]}
    assert all(line.startswith("FROM python:3.11") for line in re.findall(r"^FROM .+", DOCKERFILE,
                                                                          flags=re.MULTILINE))
