"""The trainer's settings: the deprecated `demo_baseline` still works, saying so; publish rules
unset from the environment."""

from __future__ import annotations

import pytest

from millrace.dotted import load_object
from millrace_trainer.settings import DEMO_BASELINE_EVENTS, TrainerSettings


def test_demo_baseline_is_the_demos_baseline_events_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="set baseline_events"):
        settings = TrainerSettings(demo_baseline=True, baseline_events=None)
    assert settings.baseline_events == DEMO_BASELINE_EVENTS
    assert callable(load_object(DEMO_BASELINE_EVENTS, "baseline_events"))


def test_a_baseline_events_function_that_cannot_be_imported_is_named():
    window = TrainerSettings(baseline_events="no_such_package:events").baseline_events
    with pytest.raises(ValueError, match="cannot load baseline_events 'no_such_package:events'"):
        load_object(window or "", "baseline_events")


def test_publish_rules_are_unset_with_null_and_one_must_remain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MILLRACE_PUBLISH_IDLE_S", "null")
    monkeypatch.setenv("MILLRACE_PROMOTION", "none")  # a value, not an unset
    settings = TrainerSettings()
    assert settings.publish_idle_s is None and settings.promotion == "none"
    assert settings.publish_every == 288 and settings.publish_within_s == 600
    for rule in ("PUBLISH_EVERY", "PUBLISH_WITHIN_S"):
        monkeypatch.setenv(f"MILLRACE_{rule}", "null")
    with pytest.raises(ValueError, match="no version would ever be published"):
        TrainerSettings()
