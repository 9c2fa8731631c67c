"""Bad arguments get a clear message and a non-zero exit, before anything is touched."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vmmigration.cli import cli
from vmmigration.cli.common import EXIT_PRECHECK

# Port 1 on loopback: nothing listens, so the connection is refused at once.
NOWHERE = "qemu+tcp://127.0.0.1:1/system"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["migrate", "vm", "--to", NOWHERE], "Missing option '--from'", id="no-source"),
        pytest.param(["migrate", "vm", "--from", NOWHERE, "--to", NOWHERE, "--mode", "teleport"],
                     "'teleport' is not one of", id="unknown-mode"),
        pytest.param(["migrate", "vm", "--from", NOWHERE, "--to", NOWHERE, "--bandwidth", "-5"],
                     "-5 is not in the range x>=0", id="negative-bandwidth"),
        pytest.param(["migrate", "vm", "--from", NOWHERE, "--to", NOWHERE, "--parallel", "0"],
                     "0 is not in the range 1<=x<=64", id="zero-connections"),
        pytest.param(["migrate", "vm", "--from", NOWHERE, "--to", NOWHERE, "--on-timeout", "pray"],
                     "'pray' is not one of", id="unknown-escalation"),
        pytest.param(["migrate", "--from", NOWHERE, "--to", NOWHERE], "Missing argument 'DOMAIN'",
                     id="no-domain"),
        pytest.param(["migrate", "vm", "--from", "kvm-a", "--to", NOWHERE],
                     "'kvm-a' is not a libvirt URI", id="host-name-instead-of-uri"),
        pytest.param(["inspect", "vm", "--from", NOWHERE, "--to", "qemu+tcp://a b/system"],
                     "is not a libvirt URI", id="uri-with-space"),
    ],
)
def test_bad_arguments_are_rejected_with_a_usage_error(args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert words in result.output


def test_an_unreachable_source_is_a_precheck_failure_with_its_reason() -> None:
    result = CliRunner().invoke(cli, ["migrate", "vm", "--from", NOWHERE, "--to", NOWHERE, "--json"])
    assert result.exit_code == EXIT_PRECHECK
    report = json.loads(result.output)
    assert report["error"] == "PrecheckFailed"
    assert report["messages"][0].startswith("SourceUnreachable: source qemu+tcp://127.0.0.1:1/system")
