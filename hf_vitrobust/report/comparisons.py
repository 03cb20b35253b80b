"""The `comparisons` records of the stage outputs, and which model is judged against which.

Every stage output (results.json, analysis.json, sae.json) carries a top-level list
``comparisons`` of flat records, one per paired comparison: ``model``, ``reference`` (model
keys), ``reference_role`` (base | clean_control | random_view_control), ``metric``, ``scope``,
qualifiers (``seen``, ``layer``, ``head``, ``sae_id``, ``token``, ...) and
``stats.PairedComparison.to_dict()`` (``estimate`` = model − reference on the same images,
``ci_low``, ``ci_high``, ``p_value``, ``test``, ``n``, ...). The verdict rules read only these.

Roles come from each checkpoint's ``config.robustness`` (`roles.role_of`), as recorded in the
stage outputs' model tables, never from order or folder names; an adversarial model's primary
reference is its clean control (`roles.match_controls`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hf_vitrobust.formatting import finite, fmt_ci, fmt_p
from hf_vitrobust.io import StageOutputError
from hf_vitrobust.roles import (
    ADVERSARIAL,
    BASE,
    CLEAN_CONTROL,
    RANDOM_VIEW_CONTROL,
    ROLES,
    Controls,
    match_controls,
    read_robustness,
    role_of,
)
from hf_vitrobust.stats import smallest_attainable_p

from .inputs import SOURCES, SectionUnavailable, StudyOutputs

#: Fields every record must have (the verdict rules read them).
RECORD_FIELDS = ("model", "reference", "reference_role", "metric", "scope", "estimate", "n")
#: Keys of `stats.PairedComparison.to_dict()` and the record's identity: not qualifiers.
_NOT_QUALIFIERS = frozenset(
    RECORD_FIELDS
    + (
        "ci_low",
        "ci_high",
        "p_value",
        "test",
        "confidence",
        "n_resamples",
        "seed",
        "ci_method",
        "details",
        "excludes_zero",
    )
)
REFERENCE_ROLES = (BASE, CLEAN_CONTROL, RANDOM_VIEW_CONTROL)


@dataclass(frozen=True)
class Record:
    """One paired comparison: model − reference on the same images, with its CI and test."""

    model: str
    reference: str
    reference_role: str
    metric: str
    scope: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str
    n: int
    confidence: float = 0.95
    n_resamples: int | None = None
    qualifiers: Mapping[str, Any] = field(default_factory=dict)
    #: The test's `details` (discordant pairs, non-zero differences, smallest attainable p).
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def has_ci(self) -> bool:
        return None not in (self.estimate, self.ci_low, self.ci_high)

    @property
    def p_floor(self) -> float:
        """The smallest p-value this record's test could have given."""
        details = dict(self.details)
        return smallest_attainable_p(self.test, self.n_resamples, details, self.n)

    def get(self, key: str, default: Any = None) -> Any:
        """A qualifier (``seen``, ``layer``, ``head``, ``sae_id``, ``token``, ...)."""
        return self.qualifiers.get(key, default)

    def format(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        """``+0.050 [+0.020, +0.080] pp (p=0.010, mcnemar_exact, n=200)``."""
        text = fmt_ci(self.estimate, self.ci_low, self.ci_high, digits, scale, sign=True)
        return f"{text}{unit} ({fmt_p(self.p_value)}, {self.test}, n={self.n})"


def _record(raw: Any, where: str) -> Record:
    if not isinstance(raw, Mapping):
        raise SectionUnavailable(f"{where} is not an object")
    missing = [k for k in RECORD_FIELDS if k not in raw]
    if missing:
        raise SectionUnavailable(f"{where} lacks {missing}")
    if raw["reference_role"] not in REFERENCE_ROLES:
        raise SectionUnavailable(
            f"{where} has reference_role {raw['reference_role']!r}, not one of {REFERENCE_ROLES}"
        )
    n = finite(raw["n"])
    resamples = finite(raw.get("n_resamples"))
    return Record(
        model=str(raw["model"]),
        reference=str(raw["reference"]),
        reference_role=str(raw["reference_role"]),
        metric=str(raw["metric"]),
        scope=str(raw["scope"]),
        estimate=finite(raw["estimate"]),
        ci_low=finite(raw.get("ci_low")),
        ci_high=finite(raw.get("ci_high")),
        p_value=finite(raw.get("p_value")),
        test=str(raw.get("test") or "?"),
        n=int(n) if n is not None else 0,
        confidence=finite(raw.get("confidence")) or 0.95,
        n_resamples=int(resamples) if resamples is not None else None,
        qualifiers={k: v for k, v in raw.items() if k not in _NOT_QUALIFIERS},
        details=details if isinstance(details := raw.get("details"), Mapping) else {},
    )


class Records:
    """The comparison records of one stage output, with simple selection."""

    def __init__(self, records: Iterable[Record], source: str = "") -> None:
        self.records = list(records)
        self.source = source

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def select(self, **match: Any) -> list[Record]:
        """Records whose fields (or qualifiers) equal every `match` value; a callable value is
        a predicate on the field."""
        out = []
        for r in self.records:
            for key, want in match.items():
                have = getattr(r, key) if key in Record.__dataclass_fields__ else r.get(key)
                if not (want(have) if callable(want) else have == want):
                    break
            else:
                out.append(r)
        return out

    def one(self, **match: Any) -> Record | None:
        """The single record matching `match` (None when there is none; an error when several)."""
        found = self.select(**match)
        if len(found) > 1:
            raise SectionUnavailable(
                f"{self.source}: {len(found)} comparison records match {match}; expected one"
            )
        return found[0] if found else None


def load_records(study: StudyOutputs, source: str) -> Records:
    """The `comparisons` records of a stage output (`SectionUnavailable` when it has none)."""
    raw = study.field(source, "comparisons")
    path = study.paths[source]
    if not isinstance(raw, list):
        raise SectionUnavailable(
            f"{path}: 'comparisons' is not a list of comparison records (an older format); "
            f"rerun {SOURCES[source].producer}"
        )
    return Records((_record(r, f"{path}: comparisons[{i}]") for i, r in enumerate(raw)), str(path))


@dataclass
class StudyRoles:
    """Every model's role and each adversarial fine-tune's matched controls."""

    roles: dict[str, str]
    controls: dict[str, Controls]

    @property
    def adversarial(self) -> list[str]:
        return [k for k, r in self.roles.items() if r == ADVERSARIAL]


def _robustness_tables(study: StudyOutputs) -> dict[str, Any]:
    """{model key: its config.robustness or an explicit role}, from every stage's model table."""
    out: dict[str, Any] = {}
    for source in ("results", "analysis", "sae"):
        if study.paths.get(source) is None:
            continue
        try:
            data = study.load(source)
        except StageOutputError:  # a stage that cannot be read adds no roles
            continue
        models = data.get("models")
        rows = (
            [(m.get("key"), m) for m in models if isinstance(m, Mapping)]
            if isinstance(models, list)
            else list(models.items())
            if isinstance(models, Mapping)
            else []
        )
        for key, entry in rows:
            if key is None or key in out or not isinstance(entry, Mapping):
                continue
            if entry.get("robustness") is not None:
                out[str(key)] = read_robustness(entry["robustness"])
            elif entry.get("role") in ROLES:
                out[str(key)] = entry["role"]
    return out


def study_roles(study: StudyOutputs, records: Records) -> StudyRoles:
    """Roles from the recorded ``config.robustness`` (any stage), else from the records: a model
    compared against a control is adversarial, a reference's role is its ``reference_role``."""
    recorded = _robustness_tables(study)
    roles: dict[str, str] = {}
    robustness: dict[str, Any] = {}
    for key, value in recorded.items():
        if isinstance(value, str):
            roles[key] = value
        else:
            robustness[key] = value
            roles[key] = role_of(value)
    for r in records:
        if r.get("model_role") in ROLES:
            roles.setdefault(r.model, r.get("model_role"))
        roles.setdefault(r.reference, r.reference_role)
        if r.reference_role in (CLEAN_CONTROL, RANDOM_VIEW_CONTROL):
            roles.setdefault(r.model, ADVERSARIAL)
    for r in records:
        roles.setdefault(r.model, "unknown")
    controls = match_controls({k: robustness.get(k) for k in roles if k in robustness})
    for key, role in roles.items():
        if role != ADVERSARIAL:
            continue
        found = controls.get(key, Controls(None, None))
        # A control the stage compared this model against counts when robustness is not recorded.
        clean = found.clean or _recorded_reference(records, key, CLEAN_CONTROL)
        random_view = found.random_view or _recorded_reference(records, key, RANDOM_VIEW_CONTROL)
        controls[key] = Controls(clean=clean, random_view=random_view)
    return StudyRoles(roles=roles, controls=controls)


def _recorded_reference(records: Records, model: str, role: str) -> str | None:
    refs = sorted({r.reference for r in records.select(model=model, reference_role=role)})
    return refs[0] if refs else None


__all__ = [
    "RECORD_FIELDS",
    "REFERENCE_ROLES",
    "Record",
    "Records",
    "StudyRoles",
    "load_records",
    "study_roles",
]
