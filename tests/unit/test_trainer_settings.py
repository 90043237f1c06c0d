"""The trainer's baseline settings: the deprecated `demo_baseline` still works, saying so."""

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
