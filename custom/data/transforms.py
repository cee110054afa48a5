"""MONAI preprocessing chains that produce the package's tensor contract.

Item in: ``{"image": [t1c, t1n, t2f, t2w], "label": seg}`` (label optional).
Item out:

* ``image``: float32 MetaTensor ``[4, *spatial_size]``, RAS, isotropic ``spacing`` mm, each channel
  z-scored over its own non-zero ("brain") voxels: ``x' = (x - mean_brain) / std_brain``; background
  and padding stay exactly 0 (MONAI ``NormalizeIntensity(nonzero=True, channel_wise=True)``).
* ``label``: uint8 MetaTensor ``[1, *spatial_size]`` resampled with nearest neighbour (values stay in
  {0, 1, 2, 3}); only when the item has one.
* ``factors``: float32 ``[len(FACTOR_NAMES)]`` computed by :class:`SegFactorsd` on the resampled label
  *before* pad/crop (a crop must not cut the tumour's measured volume); all NaN without a label.

Order: load (4 files stacked as channels) -> channel first -> RAS -> spacing -> normalise ->
factors -> pad/crop -> [augment] -> types. Normalising before pad/crop keeps the statistics those of
the brain, not of the field of view. Augmentation (the bundles' ``augment`` id; training only) acts on the
fixed-size tensors and applies the same affine to image and label; the factors keep describing the un-augmented anatomy
(scalings <= 5 % per axis change the log volume by at most +-0.15; rotations <= 5 degrees and the scaling move
the centroid by a few mm), which can only lower a probe fitted on augmented latents.

MONAI Label-style inference sends ``{"image": path_or_paths}`` only: use
:func:`get_inference_preprocessing` (one 4-channel NIfTI or a list of four 3D files both work).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    RandAffined,
    ResizeWithPadOrCropd,
    Spacingd,
)

from custom.constants import DEFAULT_SPACING, DEFAULT_SPATIAL_SIZE
from custom.data.factor_transform import SegFactorsd

__all__ = ["get_inference_preprocessing", "get_preprocessing"]


def _pixdim(spacing: float | Sequence[float]) -> tuple[float, float, float]:
    if isinstance(spacing, (int, float)):
        return (float(spacing),) * 3
    values = tuple(float(s) for s in spacing)
    if len(values) == 1:
        return values * 3
    if len(values) != 3:
        raise ValueError(f"spacing must be one number or three, got {spacing}")
    return values  # type: ignore[return-value]


def _size(spatial_size: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(spatial_size, int):
        return (spatial_size,) * 3
    values = tuple(int(s) for s in spatial_size)
    if len(values) != 3:
        raise ValueError(f"spatial_size must have three values, got {spatial_size}")
    return values  # type: ignore[return-value]


def get_preprocessing(
    spacing: float | Sequence[float] = DEFAULT_SPACING,
    spatial_size: int | Sequence[int] = DEFAULT_SPATIAL_SIZE,
    with_label: bool = True,
    with_factors: bool = True,
    augment: bool = False,
    image_key: str = "image",
    label_key: str = "label",
    factors_key: str = "factors",
    augment_prob: float = 0.5,
) -> Compose:
    """Training/evaluation preprocessing (see module docstring for the contract).

    Args:
        spacing: output voxel size in mm (isotropic number or three values).
        spatial_size: output grid; symmetric zero-padding or centre-cropping.
        with_label: load and resample ``label_key`` when present (missing labels are allowed).
        with_factors: add ``factors_key`` (NaN when there is no label or ``with_label`` is False).
        augment: mild random affine (rotation <= 5 deg, scale <= 5 %) on image and label with the
            same geometry. No intensity scale or shift: each case is z-scored inside the brain, which removes a
            global gain or offset at test time, and a shift would also make the zero background non-zero, which
            the brain masks of the metrics rely on. Training chains only; validation and evaluation never augment.
        image_key, label_key, factors_key: item keys.
        augment_prob: probability of each random transform.

    Returns:
        A ``monai.transforms.Compose``.

    Example:
        >>> t = get_preprocessing(spatial_size=(64, 64, 64))
        >>> out = t({"image": [t1c, t1n, t2f, t2w], "label": seg})
        >>> out["image"].shape, out["factors"].shape
        (torch.Size([4, 64, 64, 64]), torch.Size([9]))
    """
    pixdim = _pixdim(spacing)
    size = _size(spatial_size)
    keys = [image_key, label_key] if with_label else [image_key]
    modes = ["bilinear", "nearest"][: len(keys)]
    transforms: list = [
        # one loader (and so one reader object) per key: a LoadImaged shared by a 4-file image list and a
        # single-file label is not thread-safe under CacheDataset(num_workers>1) and mis-stacked channels;
        # trailing singleton axes (X,Y,Z,1 or X,Y,Z,1,1 from DICOM converters) are squeezed, as validation accepts them
        *[
            LoadImaged(
                keys=k, image_only=True, allow_missing_keys=True, reader="NibabelReader", squeeze_non_spatial_dims=True
            )
            for k in keys
        ],
        *[EnsureChannelFirstd(keys=k, allow_missing_keys=True) for k in keys],
        Orientationd(keys=keys, axcodes="RAS", labels=None, allow_missing_keys=True),
        Spacingd(keys=keys, pixdim=pixdim, mode=modes, padding_mode="zeros", dtype=np.float32, allow_missing_keys=True),
        NormalizeIntensityd(keys=image_key, nonzero=True, channel_wise=True),
    ]
    if with_factors:
        transforms.append(SegFactorsd(label_key=label_key if with_label else None, factors_key=factors_key))
    transforms.append(ResizeWithPadOrCropd(keys=keys, spatial_size=size, mode="constant", allow_missing_keys=True))
    if augment:
        transforms += [
            RandAffined(
                keys=keys,
                prob=augment_prob,
                rotate_range=(math.radians(5.0),) * 3,
                scale_range=(0.05,) * 3,
                mode=modes,
                padding_mode="zeros",
                allow_missing_keys=True,
            ),
        ]
    transforms.append(EnsureTyped(keys=image_key, dtype=torch.float32))
    if with_label:
        transforms.append(EnsureTyped(keys=label_key, dtype=torch.uint8, allow_missing_keys=True))
    return Compose(transforms)


def get_inference_preprocessing(
    spacing: float | Sequence[float] = DEFAULT_SPACING,
    spatial_size: int | Sequence[int] = DEFAULT_SPATIAL_SIZE,
    image_key: str = "image",
) -> Compose:
    """Inference preprocessing: the training chain without label, factors or augmentation.

    Needs only ``{"image": ...}`` (what MONAI Label sends); the image keeps its MetaTensor metadata so
    that outputs can be inverted/saved in the input's space.
    """
    return get_preprocessing(
        spacing=spacing,
        spatial_size=spatial_size,
        with_label=False,
        with_factors=False,
        augment=False,
        image_key=image_key,
    )
