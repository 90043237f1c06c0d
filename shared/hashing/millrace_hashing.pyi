# The compiled encoding's Python interface (src/lib.rs); maturin ships it with py.typed.
from collections.abc import Sequence
from typing import Any

def hash_features(features: Sequence[dict[str, Any]], mask: int) -> tuple[bytes, bytes, bytes]: ...
