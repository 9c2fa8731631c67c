"""Settings come from the environment once, and a bad value names its variable."""

from pathlib import Path

import pytest

from vmmigration.core.config import Settings, SettingsError, seniority_priority


def test_defaults_apply_when_nothing_is_set() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.accel == "auto" and settings.poll_interval_seconds == 0.5


def test_every_variable_is_read() -> None:
    settings = Settings.from_env({
        "VMMIGRATION_SANDBOX_DIR": "/srv/sandbox",
        "VMMIGRATION_TEST_SANDBOX_DIR": "/srv/tests",
        "VMMIGRATION_ACCEL": "TCG",
        "VMMIGRATION_GUEST_KERNEL": "/boot/vmlinuz-x",
        "VMMIGRATION_POLL_INTERVAL_SECONDS": "0.25",
    })
    assert settings == Settings(sandbox_dir=Path("/srv/sandbox"), test_sandbox_dir=Path("/srv/tests"),
                                accel="tcg", guest_kernel=Path("/boot/vmlinuz-x"),
                                poll_interval_seconds=0.25)


@pytest.mark.parametrize(
    ("env", "words"),
    [
        pytest.param({"VMMIGRATION_ACCEL": "hvf"}, "VMMIGRATION_ACCEL must be auto, kvm or tcg", id="accel"),
        pytest.param({"VMMIGRATION_POLL_INTERVAL_SECONDS": "fast"}, "must be a number of seconds", id="nan"),
        pytest.param({"VMMIGRATION_POLL_INTERVAL_SECONDS": "0"}, "must be 0.05 to 10", id="zero-poll"),
        pytest.param({"VMMIGRATION_LIBVIRT_TIMEOUT_SECONDS": "1"},
                     "VMMIGRATION_LIBVIRT_TIMEOUT_SECONDS must be 2 to 600", id="libvirt-timeout"),
        pytest.param({"VMMIGRATION_LOG_FORMAT": "logfmt"}, "VMMIGRATION_LOG_FORMAT must be text or json",
                     id="log-format"),
        pytest.param({"VMMIGRATION_SHARD": "east/1"}, "VMMIGRATION_SHARD must be a label value",
                     id="shard-not-a-label-value"),
        pytest.param({"VMMIGRATION_INVENTORY_EVENTS": "yes"},
                     "VMMIGRATION_INVENTORY_EVENTS must be true or false", id="events-flag"),
        pytest.param({"VMMIGRATION_INVENTORY_RESYNC_SECONDS": "0"},
                     "VMMIGRATION_INVENTORY_RESYNC_SECONDS must be 1 to 86400", id="resync-zero"),
    ],
)
def test_a_bad_value_is_refused_with_its_variable_name(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        Settings.from_env(env)


def test_the_libvirt_timeout_is_read_and_defaults_to_libvirtds_own_keepalive() -> None:
    assert Settings().libvirt_timeout_seconds == 30
    assert Settings.from_env({"VMMIGRATION_LIBVIRT_TIMEOUT_SECONDS": "12"}).libvirt_timeout_seconds == 12


def test_the_log_format_is_text_unless_json_is_asked_for() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"VMMIGRATION_LOG_FORMAT": "JSON"}).log_format == "json"


def test_kopf_is_told_to_write_json_only_when_the_log_format_is_json() -> None:
    text = Settings().kopf_command(python="python3")
    json = Settings(log_format="json").kopf_command(python="python3", extra=("--verbose",))
    assert "--log-format" not in text
    # Before the caller's own arguments, so that theirs win.
    assert json[-3:] == ["--log-format", "json", "--verbose"]


def test_a_shard_has_a_peering_of_its_own_and_the_unsharded_keeps_the_plain_one() -> None:
    assert Settings.from_env({}).shard == ""
    east = Settings.from_env({"VMMIGRATION_SHARD": "east"})
    assert east.kopf_command(python="python3")[-2:] != ["--peering", "vmmigration"]
    assert "vmmigration-east" in east.kopf_command(python="python3")
    assert "vmmigration" in Settings().kopf_command(python="python3")
    assert "--standalone" in Settings(peering="", shard="east").kopf_command(python="python3")


def test_events_are_followed_and_hosts_read_in_full_every_five_minutes_by_default() -> None:
    assert (Settings().inventory_events, Settings().inventory_resync_seconds) == (True, 300)
    read = Settings.from_env({"VMMIGRATION_INVENTORY_EVENTS": "False",
                              "VMMIGRATION_INVENTORY_RESYNC_SECONDS": "60"})
    assert (read.inventory_events, read.inventory_resync_seconds) == (False, 60)


def test_a_replica_started_earlier_outranks_every_later_one_in_peering() -> None:
    first = seniority_priority(started=1_800_000_000.9, tiebreak=0)
    later = seniority_priority(started=1_800_000_001.0, tiebreak=999)
    assert first > later


def test_replicas_started_in_the_same_second_are_told_apart_by_the_tiebreak() -> None:
    assert (seniority_priority(started=1_800_000_000.1, tiebreak=5)
            != seniority_priority(started=1_800_000_000.7, tiebreak=6))
    with pytest.raises(ValueError, match="tiebreak"):
        seniority_priority(started=1_800_000_000, tiebreak=1000)
