"""ImageNet-C corruptions (and sharpening) as seeded Albumentations transforms.

Every corruption is a :class:`Corruption`: a name, an ImageNet-C group, a measured frequency band,
and ``transform(severity, seed)`` returning a deterministic ``albumentations.Compose``. This
package is the only place that knows Albumentations' parameters:

- ``registry``: the ``Corruption`` rows, ``CORRUPTIONS``, look-ups and validation;
- ``families``: ``FAMILIES`` (the paper's, by measured band, by group), ``family_definition``,
  ``resolve_corruptions``, ``registry_rows``;
- ``transforms``: the Albumentations transforms (ports of ImageNet-C) and builders of stock ones;
- ``functional``, ``weather``: the corruptions as functions of an image and its random draws;
  ``kernels``: their compiled (numba) inner loops;
- ``rng``: how a transform is seeded (``reseed``, ``seeded_compose``);
- ``apply``: ``corrupt``, ``corrupt_batch``, ``corrupt_examples`` (per-image seeds from
  :func:`hf_vitrobust.seeding.image_seed`; ``reference_size`` for resolution scaling);
- ``measure``: ``psnr``, ``ssim``, ``lf_share``;
- ``fidelity``: the comparison with the reference implementation (photos, measurements); it
  imports scikit-image and ``imagecorruptions`` when available, so it is not imported here;
- ``preview``: preview grids and the command line (``python -m hf_vitrobust.corruptions
  preview|list``, ``hf-vitrobust-preview``); it loads matplotlib, so it is not imported here.

Images are converted by the package's one RGB policy, :func:`hf_vitrobust.images.as_rgb_uint8`
(re-exported here).
"""

from hf_vitrobust.constants import SEVERITIES
from hf_vitrobust.corruptions.apply import check_seed, corrupt, corrupt_batch, corrupt_examples
from hf_vitrobust.corruptions.families import (
    FAMILIES,
    FAMILY_DEFINITIONS,
    family_definition,
    registry_rows,
    resolve_corruptions,
)
from hf_vitrobust.corruptions.functional import REFERENCE_SIZE
from hf_vitrobust.corruptions.measure import LF_CUTOFF, lf_share, psnr, ssim
from hf_vitrobust.corruptions.registry import (
    BANDS,
    CORRUPTIONS,
    GROUPS,
    MIN_SIDE,
    REGISTRY_VERSION,
    Corruption,
    Gap,
    band_of,
    check_reference_size,
    check_severities,
    check_severity,
    get_corruption,
)
from hf_vitrobust.corruptions.rng import reseed
from hf_vitrobust.images import as_rgb_uint8

__all__ = [
    "BANDS",
    "CORRUPTIONS",
    "FAMILIES",
    "FAMILY_DEFINITIONS",
    "GROUPS",
    "LF_CUTOFF",
    "MIN_SIDE",
    "REFERENCE_SIZE",
    "REGISTRY_VERSION",
    "SEVERITIES",
    "Corruption",
    "Gap",
    "as_rgb_uint8",
    "band_of",
    "check_reference_size",
    "check_seed",
    "check_severities",
    "check_severity",
    "corrupt",
    "corrupt_batch",
    "corrupt_examples",
    "family_definition",
    "get_corruption",
    "lf_share",
    "psnr",
    "registry_rows",
    "reseed",
    "resolve_corruptions",
    "ssim",
]
