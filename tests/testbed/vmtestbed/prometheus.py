"""A real Prometheus server on loopback that scrapes the operator and evaluates our alert rules.

For the end-to-end tests and the demo. The binary is Debian's ``prometheus``
package (installed by scripts/bootstrap); nothing here fakes it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

JOB = "vmmigration-operator"  # the job the alert rules watch


class PrometheusError(RuntimeError):
    pass


class PrometheusServer:
    def __init__(self, *, root: Path, address: str, port: int, targets: list[str],
                 rules: Path, interval_seconds: float = 1.0) -> None:
        self.root = root
        self.address = address
        self.port = port
        self.targets = targets
        self.rules = rules
        self.interval = f"{max(1, round(interval_seconds * 1000))}ms"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "prometheus.log"

    def config(self) -> str:
        return json.dumps({  # JSON is YAML: no YAML library needed to write it
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(self.rules.resolve())],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": self.targets}]}],
        }, indent=2)

    def up(self, *, timeout_seconds: float = 60.0) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusError("prometheus is not installed (scripts/bootstrap installs it)")
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        config = self.root / "prometheus.yml"
        config.write_text(self.config())
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={self.root / 'data'}",
                 f"--web.listen-address={self.address}:{self.port}", "--web.enable-lifecycle",
                 "--storage.tsdb.retention.time=1d", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited at start:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise PrometheusError(f"prometheus was not ready in {timeout_seconds:.0f} s:\n{self.tail()}")

    def down(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as answer:
            body = json.load(answer)
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body}")
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts as Prometheus's alerts API reports them (pending or firing)."""
        return list(self._get("/api/v1/alerts")["alerts"])

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query", query=expr)["result"])

    def targets_health(self) -> list[str]:
        return [t["health"] for t in self._get("/api/v1/targets")["activeTargets"]]
