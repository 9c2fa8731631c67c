"""The operator's log: kopf's bookkeeping stays out of INFO, and JSON lines name what they are about."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from vmmigration.adapters.kube import logs

# kopf 1.45's routine INFO lines, as the operator sees them, with the logger each comes from.
ROUTINE = [
    pytest.param("kopf.objects", "Handler 'vmmigration_event' succeeded.", id="event-handler"),
    pytest.param("kopf.objects", "Timer 'probe_hypervisor' succeeded.", id="probe-timer"),
    pytest.param("kopf.objects", "Timer 'renew_readings' succeeded.", id="renew-timer"),
    pytest.param("kopf.objects", "Daemon 'placement' succeeded.", id="daemon-returns"),
    pytest.param("kopf.activities.startup", "Activity 'configure' succeeded.", id="startup"),
    pytest.param("kopf.activities.cleanup", "Activity 'goodbye' succeeded.", id="cleanup"),
    pytest.param("kopf.objects", "Creation is processed: 1 succeeded; 0 failed.", id="creation"),
    pytest.param("kopf.objects", "Updating is processed: 2 succeeded; 0 failed.", id="updating"),
    pytest.param("kopf.objects", "Resuming is processed: 1 succeeded; 0 failed.", id="resuming"),
    pytest.param("kopf.objects", "Deletion is processed: 1 succeeded; 0 failed.", id="deletion"),
    pytest.param("kopf.objects",
                 "Resuming is superseded by updating: 0 succeeded; 0 failed; 1 left to the moment.",
                 id="superseded"),
    pytest.param("kopf._core.engines.activities", "Initial authentication has been initiated.",
                 id="login-started"),
    pytest.param("kopf._core.engines.activities", "Initial authentication has finished.",
                 id="login-done"),
]


def written(name: str, message: str, *, level: int = logging.INFO, log_format: str = "text",
            extra: dict[str, Any] | None = None, exc_info: Any = None) -> str:
    """What the operator's log handler writes of one record, once install() has set it up."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.Logger("a root of the test's own")
    root.addHandler(handler)
    logs.install(log_format=log_format, logger=root)
    root.handle(root.makeRecord(name, level, __file__, 1, message, (), exc_info, extra=extra))
    return stream.getvalue()


@pytest.fixture
def kopf_log(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """The root logger's handler as kopf run sets it up (INFO), in JSON, for kopf's real loggers."""
    caplog.set_level(logging.INFO, logger="kopf")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    holder = logging.Logger("only to hold the handler for install()")
    holder.addHandler(handler)
    logs.install(log_format="json", logger=holder)
    logging.getLogger().addHandler(handler)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)


def object_logger(kind: str, name: str, namespace: str | None = None) -> kopf.LocalObjectLogger:
    body = kopf.Body({"apiVersion": "vmmigration.dev/v1alpha1", "kind": kind,
                      "metadata": {"name": name, "namespace": namespace, "uid": "0"}})
    return kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings())


@pytest.mark.parametrize(("name", "message"), ROUTINE)
def test_a_routine_kopf_line_is_not_logged_at_info(name: str, message: str) -> None:
    assert written(name, message) == ""


@pytest.mark.parametrize(("name", "message"), ROUTINE)
def test_a_routine_kopf_line_is_logged_as_debug_when_kopf_runs_verbose(
        name: str, message: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=name)
    assert written(name, message) == f"DEBUG {name} {message}\n"


@pytest.mark.parametrize("level", [logging.WARNING, logging.ERROR])
def test_a_kopf_warning_or_error_always_passes_whatever_it_says(level: int) -> None:
    for message in ("Handler 'vmmigration_event' succeeded.",
                    "Timer 'probe_hypervisor' failed temporarily: host unreachable"):
        assert written("kopf.objects", message, level=level) != ""


@pytest.mark.parametrize(("name", "message"), [
    pytest.param("vmmigration.service.driver", "Handler 'vmmigration_event' succeeded.",
                 id="ours-even-in-kopfs-words"),
    pytest.param("vmmigration.adapters.kube.handlers",
                 "vmmigration operator: 4 migrations at once, probes every 10.0 s", id="ours"),
    pytest.param("kopf._core.reactor.running", "Signal SIGTERM is received. Operator is stopping.",
                 id="kopf-stopping"),
    pytest.param("kopf._core.engines.peering", "Pausing operations in favour of [peer].",
                 id="kopf-pausing"),
    pytest.param("kopf._core.engines.activities", "Re-authentication has been initiated.",
                 id="kopf-reauthenticating"),
])
def test_our_own_info_lines_and_kopfs_news_are_logged_at_info(name: str, message: str) -> None:
    assert written(name, message) == f"INFO {name} {message}\n"


def test_a_json_line_carries_the_vmmigration_and_the_domain_from_extras() -> None:
    line = written("vmmigration.service.loop", "web-01 moves to kvm-b", log_format="json",
                   extra={"vmmigration": "prod/web", "domain": "web-01"})
    assert line.endswith("\n") and line.count("\n") == 1
    data = json.loads(line)
    assert list(data)[:4] == ["time", "level", "logger", "message"]
    assert data["level"] == "INFO" and data["logger"] == "vmmigration.service.loop"
    assert data["message"] == "web-01 moves to kvm-b"
    assert data["vmmigration"] == "prod/web" and data["domain"] == "web-01"
    assert data["time"].endswith("+00:00")


def test_a_json_line_carries_the_traceback_of_an_error() -> None:
    try:
        raise RuntimeError("libvirt went away")
    except RuntimeError as error:
        line = written("vmmigration.service.loop", "reconciling prod/web failed; retrying",
                       level=logging.ERROR, log_format="json", exc_info=(type(error), error, None),
                       extra={"vmmigration": "prod/web", "domain": None})
    data = json.loads(line)
    assert data["level"] == "ERROR" and "libvirt went away" in data["exc_info"]
    assert data["vmmigration"] == "prod/web" and data["domain"] is None


def test_a_kopf_line_about_a_vmmigration_names_it_in_the_vmmigration_field(kopf_log: io.StringIO) -> None:
    object_logger("VMMigration", "web", "prod").warning("Handler 'vmmigration_event' failed temporarily")
    data = json.loads(kopf_log.getvalue())
    assert data["vmmigration"] == "prod/web" and data["logger"] == "kopf.objects"
    assert data["message"] == "Handler 'vmmigration_event' failed temporarily"
    # kopf's settings object and its Event poster's flag are no reading for anyone.
    assert not {"k8s_ref", "k8s_skip", "settings"} & set(data)


def test_a_kopf_line_about_a_hypervisor_names_it_in_the_hypervisor_field(kopf_log: io.StringIO) -> None:
    object_logger("Hypervisor", "kvm-a").error("Hypervisor kvm-a is ignored: no uri")
    data = json.loads(kopf_log.getvalue())
    assert data["hypervisor"] == "kvm-a" and "vmmigration" not in data and data["level"] == "ERROR"


def test_a_routine_line_of_kopf_objects_is_dropped_on_its_way_to_the_root_handler(
        kopf_log: io.StringIO) -> None:
    # kopf.objects is where kopf logs a handler's success; the filter sits on the
    # root logger's handler, where kopf.objects' records end.
    object_logger("VMMigration", "web", "prod").info("Handler 'vmmigration_event' succeeded.")
    object_logger("Hypervisor", "kvm-a").info("Timer 'probe_hypervisor' succeeded.")
    object_logger("Hypervisor", "kvm-a").warning("Timer 'probe_hypervisor' failed temporarily: boom")
    [line] = kopf_log.getvalue().splitlines()
    assert json.loads(line)["message"] == "Timer 'probe_hypervisor' failed temporarily: boom"


def test_installing_twice_adds_the_filter_once() -> None:
    root = logging.Logger("a root of the test's own")
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    logs.install(log_format="text", logger=root)
    logs.install(log_format="text", logger=root)
    assert [type(f) for f in handler.filters] == [logs.QuietKopf]
    assert not isinstance(handler.formatter, logs.JsonLines)


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        logs.install(log_format="xml", logger=logging.Logger("a root of the test's own"))
