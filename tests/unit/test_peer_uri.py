"""In a peer-to-peer migration the source libvirtd dials the target: it must not be
handed file paths that exist only where the operator runs."""

from __future__ import annotations

from vmmigration.adapters.libvirt.conversions import peer_uri


def test_the_operators_certificate_directory_is_not_passed_to_the_source_host() -> None:
    uri = "qemu+tls://10.0.0.2/system?pkipath=/tmp/vmmigration-credentials/kvm-b"
    assert peer_uri(uri) == "qemu+tls://10.0.0.2/system"


def test_ssh_key_and_known_hosts_files_are_dropped_and_other_parameters_kept() -> None:
    uri = ("qemu+ssh://root@10.0.0.2/system?keyfile=/creds/id&known_hosts=/creds/kh"
           "&no_verify=1&socket=/run/libvirt/libvirt-sock")
    assert peer_uri(uri) == "qemu+ssh://root@10.0.0.2/system?no_verify=1&socket=/run/libvirt/libvirt-sock"


def test_a_uri_without_a_query_is_unchanged() -> None:
    assert peer_uri("qemu+tcp://127.0.1.3/system") == "qemu+tcp://127.0.1.3/system"


def test_the_operators_libssh_connection_becomes_plain_ssh_for_the_source_daemon() -> None:
    uri = ("qemu+libssh://root@10.0.0.2/system?keyfile=/creds/id&sshauth=privkey"
           "&known_hosts=/creds/kh")
    assert peer_uri(uri) == "qemu+ssh://root@10.0.0.2/system"
