"""Names and numbers that several layers share. A leaf: imports nothing from the package."""

from __future__ import annotations

#: ImageNet-C's severities, mildest first. Severity s always means ImageNet-C's severity s.
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

#: The key of the uncorrupted condition in every stage output.
CLEAN = "clean"

#: Stage output file names (each has one typed reader; see docs/architecture.md).
RESULTS_FILE = "results.json"
ANALYSIS_FILE = "analysis.json"
SAE_FILE = "sae.json"
STAGES_FILE = "stages.json"

#: Stages whose corrupted images must be byte-identical for the same (seed, image, corruption,
#: severity): evaluation, analysis and the SAE comparison all derive seeds with this stage name.
EVAL_STAGE = "eval"
TRAIN_STAGE = "train"
