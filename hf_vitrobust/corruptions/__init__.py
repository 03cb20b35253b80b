"""ImageNet-C corruptions (and sharpening) as seeded Albumentations transforms.

Every corruption is a :class:`Corruption`: a name, an ImageNet-C group, a measured frequency band,
and ``transform(severity, seed)`` returning a deterministic ``albumentations.Compose``. This
package is the only place that knows Albumentations' parameters:

- ``registry``: the ``Corruption`` rows, ``CORRUPTIONS``, ``FAMILIES``, look-ups and validation;
- ``transforms``: the custom Albumentations transforms and the builders of the stock ones;
- ``functional``: the NumPy/OpenCV kernels the custom transforms call;
- ``rng``: how a transform is seeded (``reseed``, ``seeded_compose``);
- ``apply``: ``corrupt``, ``corrupt_batch``, ``corrupt_examples`` (per-image seeds from
  :func:`hf_vitrobust.seeding.image_seed`);
- ``measure``: ``psnr``, ``lf_share``;
- ``preview``: preview grids and the command line (``python -m hf_vitrobust.corruptions
  preview|list``, ``hf-vitrobust-preview``); it loads matplotlib, so it is not imported here.

Images are converted by the package's one RGB policy, :func:`hf_vitrobust.images.as_rgb_uint8`
(re-exported here).
"""

from hf_vitrobust.constants import SEVERITIES
from hf_vitrobust.corruptions.apply import corrupt, corrupt_batch, corrupt_examples
from hf_vitrobust.corruptions.measure import LF_CUTOFF, lf_share, psnr
from hf_vitrobust.corruptions.registry import (
    BANDS,
    CORRUPTIONS,
    FAMILIES,
    GROUPS,
    MIN_SIDE,
    REGISTRY_VERSION,
    Corruption,
    band_of,
    check_severity,
    get_corruption,
    registry_rows,
    resolve_corruptions,
)
from hf_vitrobust.corruptions.rng import reseed
from hf_vitrobust.images import as_rgb_uint8

__all__ = [
    "BANDS",
    "CORRUPTIONS",
    "FAMILIES",
    "GROUPS",
    "LF_CUTOFF",
    "MIN_SIDE",
    "REGISTRY_VERSION",
    "SEVERITIES",
    "Corruption",
    "as_rgb_uint8",
    "band_of",
    "check_severity",
    "corrupt",
    "corrupt_batch",
    "corrupt_examples",
    "get_corruption",
    "lf_share",
    "psnr",
    "registry_rows",
    "reseed",
    "resolve_corruptions",
]
