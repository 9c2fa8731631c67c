"""Malformed and hostile manifests are refused by the API server itself, readably."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Kubectl

INVALID = sorted((Path(__file__).parent / "manifests" / "invalid").glob("*.yaml"))


def expectation(manifest: Path) -> str:
    first = manifest.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{manifest.name} must start with '# expect: …'"
    return first.removeprefix("# expect: ").strip()


def test_there_are_at_least_twenty_five_hostile_manifests() -> None:
    assert len(INVALID) >= 25


@pytest.mark.parametrize("manifest", INVALID, ids=[m.stem for m in INVALID])
def test_kubectl_apply_of_a_malformed_manifest_is_rejected_with_a_readable_message(
        kubectl: Kubectl, manifest: Path) -> None:
    done = kubectl("apply", "-f", str(manifest), check=False)
    assert done.returncode != 0, f"{manifest.name} was accepted:\n{done.stdout}"
    assert expectation(manifest) in done.stderr, done.stderr
    # Nothing was stored: the object does not exist afterwards.
    assert "created" not in done.stdout and "configured" not in done.stdout


def test_every_example_manifest_is_accepted_by_the_api_server(kubectl: Kubectl) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    done = kubectl("apply", "--dry-run=server", "-f", str(examples))
    assert done.stdout.count("(server dry run)") == len(
        [d for f in examples.glob("*.yaml") for d in f.read_text().split("\n---") if "kind:" in d])
