from __future__ import annotations

from vmmigration.core.model import MigrationRequest
from vmtestbed.daemons import Daemon


def request(name: str, source: Daemon, target: Daemon, **kwargs: object) -> MigrationRequest:
    return MigrationRequest(domain=name, source_uri=source.uri, target_uri=target.uri, **kwargs)  # type: ignore[arg-type]
