"""``TumourRegionsd``: binary region masks of a label map (predicted or reference), for region Dice.

BraTS-MEN labels: 1 non-enhancing core, 2 edema, 3 enhancing tumour. The regions used here:

* ``whole`` = labels {1, 2, 3} (the whole lesion, "labels > 0");
* ``tumour`` = labels {1, 3} (:data:`custom.constants.TUMOUR_LABELS`, the tumour whose volume the growth model
  uses; edema is not tumour).

The Dice of a region is then MONAI's ``DiceMetric`` on the two binary masks,
Dice = 2 |P n G| / (|P| + |G|) (Dice 1945; Sorensen 1948).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.transforms import MapTransform

from custom.constants import TUMOUR_LABELS

#: region name -> labels it is made of
REGIONS: dict[str, tuple[int, ...]] = {"whole": (1, 2, 3), "tumour": tuple(TUMOUR_LABELS)}


def region_mask(label: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    """Float mask (same shape as ``label``, one channel) that is 1 where ``label`` is one of ``labels``."""
    lab = torch.as_tensor(label)
    return torch.isin(torch.round(lab).long(), torch.as_tensor(list(labels), device=lab.device)).to(torch.float32)


class TumourRegionsd(MapTransform):
    """For each key (a one-channel label map) and region, add ``<key>_<region>`` (see the module docstring).

    Example:
        >>> d = TumourRegionsd(keys=["pred", "label"])({"pred": p, "label": g})
        >>> d["pred_tumour"].shape == p.shape
        True
    """

    def __init__(self, keys: Sequence[str], regions: Mapping[str, Sequence[int]] | None = None) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.regions = dict(REGIONS if regions is None else regions)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            for name, labels in self.regions.items():
                d[f"{key}_{name}"] = region_mask(d[key], labels)
        return d
