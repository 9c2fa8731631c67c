"""The operator's log: what happened to VMs and hosts at INFO, and JSON on request.

kopf logs its own bookkeeping at INFO: a status write of a running migration
ends in "Handler 'vmmigration_event' succeeded." about twice a second per
VMMigration, every timer run in "Timer '...' succeeded.". :class:`QuietKopf`
turns those lines into DEBUG ones, so ``--verbose`` still shows them.
:class:`JsonLines` writes one JSON object per line, with the VMMigration, the
domain and the Hypervisor as fields.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Mapping
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

FORMATS = ("text", "json")

# kopf's routine INFO lines (kopf 1.45), matched on the whole message. A
# handler, timer, daemon or activity is named by its class and id, e.g.
# "Timer 'probe_hypervisor' succeeded." (kopf._core.actions.execution); a
# daemon says it too when it returns. Failures are logged at WARNING or ERROR,
# never matched. (kopf's "... is invoked." lines are DEBUG already.)
_ROUTINE = re.compile(
    r"(?:Handler|Timer|Daemon|Activity|Indexer|Webhook) '[^']*' succeeded\."
    # kopf._core.reactor.processing, after on.create/update/delete/resume handlers.
    r"|(?:Creation|Updating|Deletion|Resuming) is (?:processed|superseded by \w+): .*"
    # kopf._core.engines.activities: the login at start. A re-authentication
    # (expired credentials) is not routine, and stays.
    r"|Initial authentication has (?:been initiated|finished)\.",
    re.DOTALL)


def _from_kopf(name: str) -> bool:
    return name == "kopf" or name.startswith("kopf.")


class QuietKopf(logging.Filter):
    """Demotes kopf's routine INFO lines to DEBUG: shown with ``--verbose``, dropped otherwise.

    A handler's filter, not a logger's: a logger's filter sees only the records
    made on that very logger, and kopf logs from kopf.objects and from several
    kopf.* loggers that all end at the root logger's handler.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _from_kopf(record.name):
            return True
        if not _ROUTINE.fullmatch(record.getMessage()):
            return True
        # The record is the one every later handler sees too: they agree it is DEBUG.
        record.levelno = logging.DEBUG
        record.levelname = "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


# What kopf's ObjectLogger attaches to its records (kopf._core.actions.loggers).
# The reference becomes a field of ours; the settings object and the flag for
# kopf's Event poster are no reading for anyone.
_KOPF_EXTRAS = ("k8s_ref", "k8s_skip", "settings")
# The field a kopf object reference is written to, by the object's kind.
_REF_FIELDS = {"VMMigration": "vmmigration", "Hypervisor": "hypervisor"}


class JsonLines(JsonFormatter):
    """One JSON object per line: time, level, logger, message, then what the line is about.

    ``vmmigration`` ("namespace/name"), ``domain`` and ``hypervisor`` come from
    a record's extras (``log.info(..., extra={"vmmigration": key, "domain": d})``)
    or, for kopf's lines about an object, from the reference kopf attaches.
    """

    def __init__(self) -> None:
        super().__init__(["message"], reserved_attrs=[*RESERVED_ATTRS, "taskName", *_KOPF_EXTRAS])

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        # First, so that every line starts the same way for a person reading the raw log.
        log_data["time"] = datetime.datetime.fromtimestamp(
            record.created, tz=datetime.UTC).isoformat(timespec="milliseconds")
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        super().add_fields(log_data, record, message_dict)
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, Mapping) and ref.get("name"):
            field = _REF_FIELDS.get(str(ref.get("kind")), "object")
            name = f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else str(ref["name"])
            # The caller's own extra, if any, says it more precisely.
            log_data.setdefault(field, name if field != "object" else f"{ref.get('kind')} {name}")


def install(*, log_format: str, logger: logging.Logger | None = None) -> None:
    """Quiets kopf's routine lines and sets the format on every handler of ``logger`` (root).

    kopf's ``run`` has put its stream handler on the root logger before it
    imports the operator, so that is where our records and kopf's are written.
    """
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {log_format!r}")
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, QuietKopf) for f in handler.filters):
            handler.addFilter(QuietKopf())
        if log_format == "json":
            handler.setFormatter(JsonLines())
