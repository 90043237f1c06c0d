"""Names removed from the public module API stay importable for a release, with a warning
that names the replacement."""

from __future__ import annotations

import pydantic
import pytest


def test_describe_validation_error_still_imports_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="describe_validation_error is deprecated"):
        from millrace.envelope import describe_validation_error

    class Payload(pydantic.BaseModel):
        celsius: float

    with pytest.raises(pydantic.ValidationError) as caught:
        Payload.model_validate({"celsius": "hot"})
    assert describe_validation_error(caught.value).startswith("celsius: ")


def test_an_unknown_name_is_still_an_attribute_error():
    import millrace.envelope

    with pytest.raises(AttributeError):
        millrace.envelope.nothing_of_the_kind  # noqa: B018
