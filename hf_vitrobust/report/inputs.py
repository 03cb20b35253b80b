"""A study's stage outputs: finding them under a study folder and reading them ONLY through their
typed readers, so that a missing, unreadable or drifted file is one error type
(`io.StageOutputError`) that the report shows as an unavailable section."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_vitrobust.analysis.sae.schema import read_sae_results
from hf_vitrobust.analysis.schema import read_analysis
from hf_vitrobust.constants import ANALYSIS_FILE, RESULTS_FILE, SAE_FILE, STAGES_FILE
from hf_vitrobust.evaluation.schema import read_results
from hf_vitrobust.io import StageOutputError, StageOutputMissing
from hf_vitrobust.runtime import read_stages

from .model import Figure
from .rules import VerdictRules


class SectionUnavailable(StageOutputError):
    """A section's input was read but lacks what the section needs (stated in the report)."""


@dataclass(frozen=True)
class StageSource:
    """One stage output the report reads: its file name, the stage that writes it, its reader."""

    file: str
    producer: str
    reader: Callable[[Path], dict[str, Any]]


SOURCES: dict[str, StageSource] = {
    "results": StageSource(RESULTS_FILE, "evaluation (recipes/evaluate.py)", read_results),
    "analysis": StageSource(ANALYSIS_FILE, "analysis (recipes/analyze.py)", read_analysis),
    "sae": StageSource(
        SAE_FILE, "SAE training and comparison (recipes/train_sae.py)", read_sae_results
    ),
    "stages": StageSource(STAGES_FILE, "the demo runner (recipes/demo.py)", read_stages),
}


def find_output(study_dir: Path, name: str, max_depth: int = 3) -> Path | None:
    """The shallowest `name` under `study_dir` (the report folder itself excluded), or None."""
    study_dir = Path(study_dir)
    best: tuple[int, str] | None = None
    for root, dirs, files in os.walk(study_dir):
        depth = len(Path(root).relative_to(study_dir).parts)
        # Trainer checkpoints and our own output never hold a stage's result.
        dirs[:] = sorted(
            d for d in dirs if not d.startswith((".", "checkpoint-")) and d != "report"
        )
        if depth >= max_depth:
            dirs[:] = []
        if name in files:
            candidate = (depth, str(Path(root) / name))
            best = candidate if best is None or candidate < best else best
    return Path(best[1]) if best else None


def _explicit(path: str | os.PathLike, name: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name} file {str(path)!r} does not exist.")
    return path


@dataclass
class StudyOutputs:
    """The stage outputs of one study folder; `paths[source]` is None when that stage has not run.

    `load(source)` reads a file once through its typed reader and raises `StageOutputError` (then
    and on every later call) when it is missing, unreadable or of another schema.
    """

    study_dir: Path
    paths: dict[str, Path | None]
    # Where the report draws its own figures (set by build_report).
    generated_dir: Path | None = None
    # The numbers of the verdict rules (margins, floors, correction).
    rules: VerdictRules = field(default_factory=VerdictRules)
    _loaded: dict[str, dict[str, Any] | StageOutputError] = field(default_factory=dict, repr=False)

    @classmethod
    def discover(
        cls,
        study_dir: str | os.PathLike,
        results: str | os.PathLike | None = None,
        analysis: str | os.PathLike | None = None,
        sae: str | os.PathLike | None = None,
    ) -> StudyOutputs:
        """Find the stage outputs under `study_dir` (explicit paths win over discovery)."""
        study_dir = Path(study_dir)
        if not study_dir.is_dir():
            raise FileNotFoundError(
                f"study_dir {str(study_dir)!r} is not a folder; pass the output folder of a study "
                "(e.g. outputs/demo)."
            )
        paths: dict[str, Path | None] = {}
        for source, explicit in (("results", results), ("analysis", analysis), ("sae", sae)):
            name = SOURCES[source].file
            paths[source] = (
                _explicit(explicit, name) if explicit is not None else find_output(study_dir, name)
            )
        stages = study_dir / STAGES_FILE  # the demo writes it at the top of its folder only
        paths["stages"] = stages if stages.is_file() else None
        return cls(study_dir=study_dir, paths=paths)

    def load(self, source: str) -> dict[str, Any]:
        """The validated content of a stage output (`StageOutputError` when it cannot be had)."""
        path, spec = self.paths[source], SOURCES[source]
        if path is None:
            raise StageOutputMissing(
                f"{spec.producer} has not been run ({spec.file} not found under {self.study_dir})."
            )
        if source not in self._loaded:
            try:
                self._loaded[source] = spec.reader(path)
            except StageOutputError as error:
                self._loaded[source] = error
        loaded = self._loaded[source]
        if isinstance(loaded, StageOutputError):
            raise loaded
        return loaded

    def field(self, source: str, key: str) -> Any:
        """A top-level field that the reader does not require (`SectionUnavailable` if absent)."""
        data = self.load(source)
        if key not in data:
            raise SectionUnavailable(f"{self.paths[source]} has no {key!r}")
        return data[key]

    def figure(self, source: str, name: str | os.PathLike | None) -> Path | None:
        """Resolve a figure named in a stage's JSON: as written, relative to that JSON's folder,
        or by file name beside it (a study folder may have been moved since it was written)."""
        base = self.paths[source]
        if base is None or not name:
            return None
        path = Path(name)
        for candidate in (path, base.parent / path, base.parent / path.name):
            if candidate.is_file():
                return candidate
        return None

    def stage_figures(self, source: str, *needles: str) -> list[Path]:
        """PNG figures of a stage whose file name contains any of `needles` (listed in the JSON's
        `figures`, else found beside the JSON)."""
        listed = self.load(source).get("figures")
        base = self.paths[source]
        names: list[str] = []
        if isinstance(listed, Mapping):
            names = [str(v) for v in listed.values()]
        elif isinstance(listed, list):
            names = [str(v) for v in listed]
        elif base is not None:
            names = sorted(p.name for p in base.parent.glob("*.png"))
        out = []
        for name in names:
            if any(n in Path(name).name.lower() for n in needles):
                path = self.figure(source, name)
                if path is not None and path not in out:
                    out.append(path)
        return out

    def figures_or_missing(self, source: str, caption: str, *needles: str) -> list[Figure]:
        """`stage_figures` as captioned Figures, or one missing Figure saying none was written."""
        paths = self.stage_figures(source, *needles)
        if not paths:
            return [Figure(caption, None, missing=f"no figure matching {needles} was written")]
        return [Figure(f"{caption} ({p.stem.replace('_', ' ')})", p) for p in paths]

    def figures_if_any(self, source: str, caption: str, *needles: str) -> list[Figure]:
        """`stage_figures` as captioned Figures; nothing when the stage wrote none (optional)."""
        return [f for f in self.figures_or_missing(source, caption, *needles) if f.path is not None]

    def generated(self, name: str) -> Path:
        """Where the report writes a figure it draws itself."""
        if self.generated_dir is None:
            raise SectionUnavailable("no folder for generated figures")
        self.generated_dir.mkdir(parents=True, exist_ok=True)
        return self.generated_dir / name


__all__ = ["SOURCES", "SectionUnavailable", "StageSource", "StudyOutputs", "find_output"]
