from __future__ import annotations

from vmmigration.model import MigrationRequest
from vmmigration.sandbox.daemons import Daemon


def request(name: str, source: Daemon, target: Daemon, **kwargs: object) -> MigrationRequest:
    return MigrationRequest(domain=name, source_uri=source.uri, target_uri=target.uri, **kwargs)  # type: ignore[arg-type]
