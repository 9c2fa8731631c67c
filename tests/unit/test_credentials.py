"""Credentials from a Secret become private files and URI parameters, never log text."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from vmmigration.service.credentials import CredentialsError, materialise
from vmmigration.core.model import display_uri

TLS = {"ca.crt": b"CA", "tls.crt": b"CERT", "tls.key": b"KEY"}


def test_tls_material_lands_in_a_private_pki_directory(tmp_path: Path) -> None:
    uri = materialise(uri="qemu+tls://h/system", secret=TLS, directory=tmp_path / "kvm-a")
    assert uri == f"qemu+tls://h/system?pkipath={tmp_path / 'kvm-a'}"
    assert (tmp_path / "kvm-a" / "clientkey.pem").read_bytes() == b"KEY"
    assert stat.S_IMODE((tmp_path / "kvm-a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "kvm-a" / "clientkey.pem").stat().st_mode) == 0o600


def test_an_ssh_key_becomes_the_keyfile_parameter(tmp_path: Path) -> None:
    uri = materialise(uri="qemu+ssh://root@h/system", secret={"ssh-privatekey": b"K"},
                      directory=tmp_path / "h")
    assert "keyfile=" in uri and (tmp_path / "h" / "id").read_bytes() == b"K"


def test_an_ssh_host_is_reached_over_libssh_so_the_secrets_known_hosts_is_checked(
    tmp_path: Path,
) -> None:
    # The ssh binary behind qemu+ssh:// ignores known_hosts=; libssh honours it.
    uri = materialise(uri="qemu+ssh://root@h:2222/system?no_tty=1",
                      secret={"ssh-privatekey": b"K", "known_hosts": b"h ssh-ed25519 AAAA"},
                      directory=tmp_path / "h")
    assert uri.startswith("qemu+libssh://root@h:2222/system?")
    assert f"known_hosts={tmp_path / 'h' / 'known_hosts'}" in uri
    assert "sshauth=privkey" in uri and "no_tty=1" in uri
    assert (tmp_path / "h" / "known_hosts").read_bytes() == b"h ssh-ed25519 AAAA"


def test_a_secret_missing_a_key_names_what_it_lacks_without_its_contents(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="tls.key") as caught:
        materialise(uri="qemu+tls://h/system", secret={"ca.crt": b"SECRET-CA", "tls.crt": b"C"},
                    directory=tmp_path)
    assert "SECRET-CA" not in str(caught.value)


def test_the_displayed_uri_drops_file_parameters() -> None:
    assert display_uri("qemu+tls://h/system?pkipath=/x") == "qemu+tls://h/system"


def test_files_of_an_earlier_secret_do_not_linger_after_a_switch(tmp_path: Path) -> None:
    materialise(uri="qemu+ssh://root@h/system", secret={"ssh-privatekey": b"K"},
                directory=tmp_path / "h")
    materialise(uri="qemu+tls://h/system", secret=TLS, directory=tmp_path / "h")
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == [
        "cacert.pem", "clientcert.pem", "clientkey.pem"]
