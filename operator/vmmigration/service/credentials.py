"""Turns a Hypervisor's credentials Secret into files libvirt can use, and a URI naming them.

libvirt reads TLS material from a directory (``pkipath``) and an SSH key from
a file (``keyfile``). For SSH the operator connects with libvirt's built-in
libssh client (``qemu+libssh://``, same user, host and path): the ``ssh``
binary behind ``qemu+ssh://`` ignores ``known_hosts`` and reads the process's
HOME instead, so a Secret's known_hosts would silently not be checked. The
files are written 0600 in a 0700 directory per Hypervisor. Secret contents never reach a log line, an Event or a status: only
the directory's path appears in the connection URI, and that URI is not
printed either (``display_uri`` strips the parameters).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from vmmigration.core.errors import CredentialsError

__all__ = ["CredentialsError", "materialise", "with_parameters"]


# Secret key -> the file name libvirt looks for under pkipath.
TLS_FILES = {"ca.crt": "cacert.pem", "tls.crt": "clientcert.pem", "tls.key": "clientkey.pem"}


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def with_parameters(uri: str, extra: Mapping[str, str]) -> str:
    parts = urllib.parse.urlsplit(uri)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update(extra)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, safe="/")))


def _over_libssh(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    driver, _, transport = parts.scheme.partition("+")
    if transport != "ssh":
        return uri
    return urllib.parse.urlunsplit(parts._replace(scheme=f"{driver}+libssh"))


def materialise(*, uri: str, secret: Mapping[str, bytes], directory: Path) -> str:
    """Write the Secret's material under ``directory`` and return the URI that uses it."""
    scheme = urllib.parse.urlsplit(uri).scheme
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    # What an earlier Secret left (an SSH key, after a switch to TLS) must not linger.
    for stale in directory.iterdir():
        if stale.is_file():
            stale.unlink()
    if scheme.endswith("+tls"):
        missing = [key for key in TLS_FILES if key not in secret]
        if missing:
            raise CredentialsError(f"the credentials Secret lacks {', '.join(missing)} "
                                   "(needs tls.crt, tls.key and ca.crt for qemu+tls)")
        for key, filename in TLS_FILES.items():
            _write(directory / filename, secret[key])
        return with_parameters(uri, {"pkipath": str(directory)})
    if "ssh" in scheme:
        if "ssh-privatekey" not in secret:
            raise CredentialsError("the credentials Secret lacks ssh-privatekey (for qemu+ssh)")
        _write(directory / "id", secret["ssh-privatekey"])
        extra = {"keyfile": str(directory / "id"), "sshauth": "privkey"}
        if "known_hosts" in secret:
            _write(directory / "known_hosts", secret["known_hosts"])
            extra["known_hosts"] = str(directory / "known_hosts")
        return with_parameters(_over_libssh(uri), extra)
    raise CredentialsError(f"credentials apply to qemu+tls and qemu+ssh URIs, not {scheme}://")
