"""Certificates for the sandbox, made with openssl: a CA, and server and client
certificates it signs. Used for the control plane's TLS and for libvirt over TLS.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

# Subject alternative names come from the environment, so one file serves every certificate.
_CONFIG = """# Written by the vmmigration sandbox.
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = ${ENV::VMMIGRATION_SAN}
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
"""


class PkiError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Certificate:
    """A key pair signed by a sandbox CA, as files."""

    cert: Path
    key: Path
    ca_cert: Path


def openssl(*args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "VMMIGRATION_SAN": "IP:127.0.0.1", **(env or {})})
    if done.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def private_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(path))
    path.chmod(0o600)


def ensure_ca(directory: Path, *, name: str = "vmmigration sandbox CA",
              cert_name: str = "cacert.pem", key_name: str = "cakey.pem") -> Certificate:
    """A CA in ``directory``, made once: certificates issued later stay valid."""
    found = Certificate(cert=directory / cert_name, key=directory / key_name,
                        ca_cert=directory / cert_name)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    # Rewritten every time, so certificates issued later get today's extensions.
    config = directory / "extensions.cnf"
    config.write_text(_CONFIG)
    if found.cert.is_file() and found.key.is_file():
        return found
    private_key(found.key)
    openssl("req", "-x509", "-new", "-key", str(found.key), "-subj", f"/CN={name}",
            "-days", "3650", "-config", str(config), "-extensions", "ca", "-out", str(found.cert))
    return found


def issue(ca: Certificate, *, subject: str, cert: Path, key: Path,
          alt_names: Sequence[str] = ()) -> Certificate:
    """A certificate signed by ``ca``: a server one for ``alt_names`` (``IP:…``/``DNS:…``,
    which TLS clients such as libvirt's check), else a client one."""
    private_key(key)
    cert.parent.mkdir(parents=True, exist_ok=True)
    request = cert.with_suffix(".csr")
    openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(request))
    openssl("x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key),
            "-CAcreateserial", "-CAserial", str(ca.key.parent / "ca.srl"), "-days", "825",
            "-extfile", str(ca.key.parent / "extensions.cnf"),
            "-extensions", "server" if alt_names else "client", "-out", str(cert),
            env={"VMMIGRATION_SAN": ", ".join(alt_names)} if alt_names else None)
    request.unlink()
    return Certificate(cert=cert, key=key, ca_cert=ca.cert)
