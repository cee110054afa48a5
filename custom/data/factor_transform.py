"""``SegFactorsd``: attach the segmentation's geometric factors to a data item.

The factors (log-volume, world centroid, sphericity, log-surface-area, extents; see
:mod:`custom.data.factors`) are the supervision / probing targets for the latent codes. They are
computed from the label *after* orientation and resampling, with the label's current MetaTensor
affine, so that they describe exactly the geometry the network sees (world coordinates are
unchanged by reorientation; volumes change only through nearest-neighbour resampling).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["SegFactorsd"]


class SegFactorsd(MapTransform):
    """Compute ``seg_factors`` of ``label_key`` into ``factors_key`` (float32 tensor, FACTOR_NAMES order).

    When the item has no label (unlabelled scan) the factors are all NaN, so labelled and unlabelled
    items share one schema and can be collated together.

    Args:
        label_key: key of the (channel-first, single-channel) label MetaTensor; ``None`` means
            "never a label" (factors always NaN, for chains that do not load labels).
        factors_key: output key.
        affine_key: optional key holding a 4x4 affine to use when the label is a plain array/tensor
            without ``.affine`` (otherwise required).

    Example:
        >>> t = SegFactorsd(label_key="label")
        >>> t({"image": img})["factors"]  # no label -> tensor of NaN
    """

    def __init__(
        self, label_key: str | None = "label", factors_key: str = "factors", affine_key: str | None = None
    ) -> None:
        keys: KeysCollection = [label_key or factors_key]
        super().__init__(keys, allow_missing_keys=True)
        self.label_key = label_key
        self.factors_key = factors_key
        self.affine_key = affine_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        from custom.data.factors import FACTOR_NAMES, seg_factors  # lazy: sibling module

        d = dict(data)
        values = np.full(len(FACTOR_NAMES), np.nan, dtype=np.float32)
        label = d.get(self.label_key) if self.label_key is not None else None
        if label is not None:
            if isinstance(label, MetaTensor):
                affine = label.affine
            elif self.affine_key is not None and self.affine_key in d:
                affine = d[self.affine_key]
            else:
                raise ValueError(
                    f"SegFactorsd: '{self.label_key}' has no affine (not a MetaTensor) and no affine_key given"
                )
            seg = torch.as_tensor(label).detach().cpu().numpy()
            if seg.ndim == 4:
                if seg.shape[0] != 1:
                    raise ValueError(f"SegFactorsd: label must have one channel, got shape {tuple(seg.shape)}")
                seg = seg[0]
            seg = np.rint(seg).astype(np.int16)  # nearest-resampled labels may carry float noise
            affine_np = np.asarray(torch.as_tensor(affine).detach().cpu().numpy(), dtype=np.float64)
            factors = seg_factors(seg, affine_np)
            values = np.asarray([factors[name] for name in FACTOR_NAMES], dtype=np.float32)
        d[self.factors_key] = torch.from_numpy(values)
        return d
