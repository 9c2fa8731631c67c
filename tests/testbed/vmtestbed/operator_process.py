"""The operator as a real process (``kopf run``) for the tests, the benchmark and the demo.

It runs under the kubeconfig it is given, normally the ServiceAccount token
from :meth:`ControlPlane.service_account_kubeconfig`, so the RBAC we ship is
what it really has.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vmmigration.core.config import Settings

# The line the startup handler logs once the operator is configured.
READY_MARK = "vmmigration operator:"


class OperatorProcess:
    def __init__(self, *, kubeconfig: Path, log_dir: Path, env: dict[str, str] | None = None,
                 peering: str = "vmmigration", verbose: bool = True) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.peering = peering
        self.verbose = verbose
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def _defaults(self) -> dict[str, str]:
        # Several operators share one test machine: no endpoint unless asked
        # for (and then on loopback), and credentials beside the logs.
        return {"VMMIGRATION_CREDENTIALS_DIR": str(self.log_dir / "credentials"),
                "VMMIGRATION_METRICS_PORT": "0", "VMMIGRATION_HEALTH_PORT": "0"}

    def command(self) -> list[str]:
        settings = Settings.from_env({**os.environ, **self._defaults(), **self.env})
        return settings.kopf_command(python=sys.executable, peering=self.peering,
                                     extra=("--verbose",) if self.verbose else ())

    def start(self, *, timeout_seconds: float = 60.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        env = {**os.environ, **self._defaults(), **self.env, "KUBECONFIG": str(self.kubeconfig)}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                            env=env)
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.dead():
                raise RuntimeError(f"the operator exited at start:\n{self.tail()}")
            if READY_MARK in self.log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the operator did not start in {timeout_seconds:.0f} s:\n{self.tail()}")

    def dead(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def kill9(self) -> None:
        """What a node failure or an OOM kill does: no cleanup at all."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, *, grace_seconds: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")
                         for p in sorted(self.log_dir.glob("operator-*.log")))
