"""Numbers as people read them: sizes, rates, durations and ages."""

from __future__ import annotations

import pytest

from vmmigration.core import units


@pytest.mark.parametrize(("count", "text"), [
    pytest.param(0, "0B", id="nothing"),
    pytest.param(1000, "1000B", id="under-a-kibibyte"),
    pytest.param(1024, "1.0Ki", id="one-kibibyte"),
    pytest.param(128 * 2**20, "128Mi", id="a-tiny-guest"),
    pytest.param(3 * 2**30 + 2**28, "3.2Gi", id="a-decimal-below-ten"),
    pytest.param(2**20 - 1, "1.0Mi", id="rounds-up-to-the-next-suffix"),
    pytest.param(9.97 * 2**30, "10Gi", id="no-ten-point-zero"),
    pytest.param(64 * 2**40, "64Ti", id="a-big-host"),
])
def test_sizes_use_binary_suffixes_with_two_figures_below_ten(count: float, text: str) -> None:
    assert units.size(count) == text


@pytest.mark.parametrize(("seconds", "text"), [
    pytest.param(0.045, "45ms", id="a-switch-over"),
    pytest.param(4.21, "4.2s", id="seconds-with-a-decimal"),
    pytest.param(45, "45s", id="whole-seconds"),
    pytest.param(185, "3m05s", id="minutes"),
    pytest.param(3720, "1h02m", id="hours"),
    pytest.param(2 * 86400 + 3 * 3600, "2d03h", id="days"),
    pytest.param(float("inf"), "∞", id="never"),
])
def test_durations_read_like_a_stopwatch(seconds: float, text: str) -> None:
    assert units.duration(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [
    pytest.param(-3, "0s", id="a-clock-a-little-ahead"),
    pytest.param(45, "45s", id="seconds"),
    pytest.param(185, "3m5s", id="a-few-minutes"),
    pytest.param(1500, "25m", id="minutes"),
    pytest.param(4 * 3600 + 600, "4h10m", id="hours-and-minutes"),
    pytest.param(30 * 3600, "30h", id="a-day-and-more"),
    pytest.param(3 * 86400 + 3600, "3d1h", id="days"),
    pytest.param(40 * 86400, "40d", id="weeks"),
])
def test_ages_are_as_coarse_as_kubectl_shows_them(seconds: float, text: str) -> None:
    assert units.age(seconds) == text


def test_a_rate_is_a_size_per_second() -> None:
    assert units.rate(120 * 2**20) == "120Mi/s"
