"""``millrace init`` and ``millrace check``: a feature module of your own, from a skeleton to a
module checked on a sample of your events."""

from __future__ import annotations

import itertools
import string
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from millrace.features import load_feature_module
from millrace.featurize import BatchResult, Featurizer
from millrace_featurizer.backfill import from_file

TEMPLATES = resources.files("millrace_cli") / "templates"


def init_project(name: str, folder: Path) -> list[Path]:
    """Write the skeleton of a feature module called ``name`` into ``folder``: the module and a
    generator of sample events (``<name>/``), its settings (``millrace.toml``) and a test
    (``tests/test_<name>.py``). Refuses to overwrite anything."""
    if not name.isidentifier() or name.startswith("millrace"):
        raise ValueError(f"{name!r} must be a Python package name (and not start with millrace)")
    folder = folder.resolve()
    substitutions = {"name": name}
    files = {
        folder / name / "__init__.py": (TEMPLATES / "project" / "__init__.py").read_text(),
        folder / name / "features.py": (TEMPLATES / "project" / "features.py").read_text(),
        folder / name / "generate.py": (TEMPLATES / "project" / "generate.py").read_text(),
        folder / "millrace.toml": _render("millrace.toml.tmpl", substitutions),
        folder / "tests" / f"test_{name}.py": _render("test_module.py.tmpl", substitutions),
    }
    existing = [path for path in files if path.exists()]
    if existing:
        raise FileExistsError(f"{', '.join(map(str, existing))} exist already: nothing written")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("<name>", name))
    return list(files)


def _render(template: str, substitutions: dict[str, str]) -> str:
    return string.Template((TEMPLATES / template).read_text()).substitute(substitutions)


@dataclass
class FeatureSummary:
    count: int = 0
    low: float = float("inf")
    high: float = float("-inf")
    total: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.low, self.high, self.total = (
            min(self.low, value),
            max(self.high, value),
            self.total + value,
        )


@dataclass
class CheckReport:
    events: int = 0
    feature_records: int = 0
    labels: int = 0
    #: kind -> how many, and the first reasons of each kind.
    rejected: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, list[str]] = field(default_factory=dict)
    features: dict[str, FeatureSummary] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Something came out: feature records or labels."""
        return bool(self.feature_records or self.labels)

    def add(self, result: BatchResult) -> None:
        self.events += result.events
        for dead in result.dead:
            self.rejected[dead.kind] += 1
            shown = self.reasons.setdefault(dead.kind, [])
            if len(shown) < 3:
                shown.append(f"event {dead.source.offset + 1}: {dead.reason}")
        self.feature_records += len(result.feature_records)
        self.labels += len(result.label_records)
        for record in result.feature_records:
            for name, value in record.features.items():
                self.features.setdefault(name, FeatureSummary()).add(value)


def check_module(module_path: str, events: Path, batch_size: int = 10_000) -> CheckReport:
    """Run ``module_path`` over a file of events with the loop body of the backfill and the
    live runner, and tell what came out and what was rejected, why."""
    featurizer = Featurizer(load_feature_module(module_path))
    states: dict[str, dict[str, float]] = {}

    def load(entities: Mapping[str, int]) -> dict[str, dict[str, float]]:
        return {entity: states.setdefault(entity, {}) for entity in entities}

    report = CheckReport()
    sources = from_file(events)
    while batch := list(itertools.islice(sources, batch_size)):
        report.add(featurizer.run_batch(batch, load))
    return report
