"""The model's image processor as fast tensor preprocessing (``ProcessorSpec``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


@dataclass(frozen=True)
class ProcessorSpec:
    """Size, resampling, crop, mean and std of a model's image processor, applied fast.

    Resizing (and centre cropping) uses Pillow on uint8 with the processor's filter, as
    ``ViTImageProcessorPil`` does; rescaling and normalisation are one vectorised multiply-add
    per batch instead of the processor's per-image work.
    """

    size: tuple[int, int]  # final (H, W) the model sees
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = PILImage.Resampling.BILINEAR
    do_resize: bool = True
    do_normalize: bool = True
    resize_to: tuple[int, int] | None = None  # exact (H, W) resize
    shortest_edge: int | None = None  # or: resize the short side to this, keeping the aspect
    crop_size: tuple[int, int] | None = None  # then centre-crop to (H, W)

    @classmethod
    def from_processor(cls, processor: Any) -> ProcessorSpec:
        """Read size/crop/mean/std/resample from a transformers image processor (or a spec)."""
        if isinstance(processor, ProcessorSpec):
            return processor
        processor = getattr(processor, "image_processor", processor)
        size = _get(processor, "size")
        height, width = _get(size, "height"), _get(size, "width")
        shortest = _get(size, "shortest_edge")
        crop = _get(processor, "crop_size") if _get(processor, "do_center_crop") else None
        crop_hw = (int(_get(crop, "height")), int(_get(crop, "width"))) if crop else None
        if height and width:
            resize_to, shortest = (int(height), int(width)), None
            out_size = crop_hw or resize_to
        elif shortest:
            resize_to, shortest = None, int(shortest)
            out_size = crop_hw or (shortest, shortest)
        else:
            raise ValueError(
                f"Unsupported image processor size {size!r} ({type(processor).__name__}): "
                "expected {'height', 'width'} or {'shortest_edge'}."
            )
        if shortest and not crop_hw:
            raise ValueError(
                f"{type(processor).__name__} resizes the shortest edge without a centre crop, so "
                "images keep their aspect ratio and cannot be batched; use a processor with "
                "size={'height', 'width'} or do_center_crop=True."
            )
        if _get(processor, "do_rescale") is False:
            raise ValueError(
                f"{type(processor).__name__} has do_rescale=False; this pipeline feeds [0, 1] "
                "pixels and needs a processor that rescales 0..255 inputs."
            )
        mean = _get(processor, "image_mean")
        std = _get(processor, "image_std")
        do_normalize = _get(processor, "do_normalize") is not False
        if mean is None or std is None:
            mean, std, do_normalize = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False

        def three(values: Any) -> tuple[float, float, float]:
            values = [float(v) for v in np.atleast_1d(np.asarray(values, dtype=float))]
            return tuple(values * 3) if len(values) == 1 else tuple(values)  # type: ignore[return-value]

        resample = _get(processor, "resample")
        resample = int(getattr(resample, "value", resample)) if resample is not None else 2
        if resample not in {int(r) for r in PILImage.Resampling}:
            resample = int(PILImage.Resampling.BILINEAR)
        return cls(
            size=out_size,
            mean=three(mean),
            std=three(std),
            resample=resample,
            do_resize=_get(processor, "do_resize") is not False,
            do_normalize=do_normalize,
            resize_to=resize_to,
            shortest_edge=shortest,
            crop_size=crop_hw,
        )

    def resize_uint8(self, image: np.ndarray) -> np.ndarray:
        """Resize (and centre-crop) an RGB uint8 image to the model's input size."""
        height, width = image.shape[:2]
        if (height, width) == self.size and (self.crop_size or self.resize_to == self.size):
            return image  # already what the model sees (e.g. Fashion-MNIST at 28 px)
        pil = PILImage.fromarray(image)
        if self.do_resize and self.shortest_edge:
            # transformers' rule: the short side becomes `shortest_edge`, the long side int().
            if width <= height:
                new = (self.shortest_edge, int(self.shortest_edge * height / width))
            else:
                new = (int(self.shortest_edge * width / height), self.shortest_edge)
            pil = pil.resize(new, resample=self.resample)
        elif self.do_resize and self.resize_to and (height, width) != self.resize_to:
            pil = pil.resize((self.resize_to[1], self.resize_to[0]), resample=self.resample)
        if self.crop_size:
            crop_h, crop_w = self.crop_size
            top, left = (pil.height - crop_h) // 2, (pil.width - crop_w) // 2
            pil = pil.crop((left, top, left + crop_w, top + crop_h))
        out = np.asarray(pil)
        if out.shape[:2] != self.size:
            raise ValueError(
                f"Image of size {height}x{width} became {out.shape[0]}x{out.shape[1]}, not the "
                f"model's {self.size[0]}x{self.size[1]} (the processor has do_resize=False)."
            )
        return np.ascontiguousarray(out)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(3, 1, 1)
        return mean, std

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels (..., 3, H, W) -> the model's normalised pixel values."""
        if not self.do_normalize:
            return x01
        mean, std = self._stats(x01)
        return (x01 - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The model's normalised pixel values -> [0, 1] pixels."""
        if not self.do_normalize:
            return x
        mean, std = self._stats(x)
        return x * std + mean

    def to_tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 HWC images -> normalised float ``[B, 3, H, W]`` (resized when needed)."""
        height, width = self.size
        if len(images) == 0:
            return torch.empty(0, 3, height, width)
        stacked = np.stack([self.resize_uint8(np.asarray(img, dtype=np.uint8)) for img in images])
        # One fused multiply-add in numpy: (v / 255 - mean) / std = v * scale + offset. Torch's
        # elementwise ops here are slower per call and contend for cores with the trainer.
        x = stacked.astype(np.float32)
        if self.do_normalize:
            std = np.asarray(self.std, dtype=np.float64)
            x *= (1.0 / (255.0 * std)).astype(np.float32)
            x += (-np.asarray(self.mean, dtype=np.float64) / std).astype(np.float32)
        else:
            x *= np.float32(1.0 / 255.0)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


__all__ = ["ProcessorSpec"]
