"""What a caller (a datalist, MONAI Label) gives as ``image`` -> what the bundle's ``LoadImaged`` reads.

Accepted forms of ``image``:

* a list of the case's per-channel 3D files in the metadata's channel order (a datalist item; unchanged);
* one 4D NIfTI holding the channels (unchanged; ``CheckInputFilesd`` then checks its volume count);
* one file of a BraTS-MEN case, ``<case>-<modality>.nii.gz`` with a modality of the metadata's ``channel_def``
  (MONAI Label sends one image file per request): the case's files ``<case>-t1c.nii.gz``, ... beside it;
* a BraTS-MEN case folder ``<case>/``: its files ``<case>/<case>-<modality>.nii.gz``.

A request without a ``case_id`` (MONAI Label sends only the image) gets the case's name as ``case_id``: the
BraTS-MEN case (``<case>`` of ``<case>-<modality>.nii.gz``), the case folder's name, or the 4D file's name
without ``.nii``/``.nii.gz``; the outputs are named by it (``custom.data.output_names.NameByCased``).

MONAI Label also adds string entries such as ``image_path``. monai 1.6.1's ``Spacingd`` treats every entry whose
name starts with ``<key>_`` as a metadata dict and calls ``.update`` on it (``'str' object has no attribute
'update'``), so string-valued ``<key>_*`` entries are moved to ``request_<key>_*`` (same value, nothing dropped).
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.transforms import MapTransform

from custom.data.geometry_check import InputGeometryError

__all__ = ["CaseFilesd", "case_files", "case_name", "REQUEST_PREFIX"]

#: prefix given to string-valued ``<key>_*`` entries (MONAI Label's ``image_path``)
REQUEST_PREFIX = "request_"

_NIFTI = re.compile(r"^(?P<case>.+)-(?P<modality>[A-Za-z0-9]+)\.nii(?:\.gz)?$")


def _channel_names(metadata_file: str, key: str) -> list[str]:
    meta = json.loads(Path(metadata_file).read_text())
    spec = meta["network_data_format"]["inputs"][key]
    channel_def = spec.get("channel_def", {})
    return [str(channel_def[str(i)]) for i in range(int(spec["num_channels"]))]


def case_files(image: str | Sequence[str], channels: Sequence[str]) -> str | list[str]:
    """Resolve one request's ``image`` to the files ``LoadImaged`` stacks (see the module docstring).

    Args:
        image: a list of per-channel files, a 4D file, one file of a BraTS-MEN case, or a case folder.
        channels: modality names in channel order, e.g. ``("t1c", "t1n", "t2f", "t2w")``.

    Returns:
        the list of per-channel files, or the single 4D file unchanged.

    Raises:
        InputGeometryError: a case folder or case file whose sibling modality files are not all there.
    """
    if not isinstance(image, (str, Path)):
        return [str(f) for f in image]
    path = Path(image)
    if path.is_dir():
        files = [path / f"{path.name}-{m}.nii.gz" for m in channels]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise InputGeometryError(
                f"{path}: a BraTS-MEN case folder must hold {', '.join(f.name for f in files)}; missing {missing}"
            )
        return [str(f) for f in files]
    match = _NIFTI.match(path.name)
    if match is None or match["modality"] not in channels:
        return str(path)
    suffix = path.name[len(match["case"]) + len(match["modality"]) + 1 :]
    files = [path.with_name(f"{match['case']}-{m}{suffix}") for m in channels]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InputGeometryError(
            f"{path}: one file of BraTS-MEN case {match['case']} was given, so its {len(channels)} modality files "
            f"({', '.join(channels)}) are read from its folder; missing {missing}"
        )
    return [str(f) for f in files]


def case_name(image: str, channels: Sequence[str]) -> str:
    """The case one request's ``image`` names (see the module docstring), e.g. ``BraTS-MEN-00003-000``."""
    path = Path(image)
    if path.is_dir():
        return path.name
    match = _NIFTI.match(path.name)
    if match is not None and match["modality"] in channels:
        return match["case"]
    return re.sub(r"\.nii(\.gz)?$", "", path.name)


class CaseFilesd(MapTransform):
    """Dictionary form of :func:`case_files`; also moves string ``<key>_*`` entries to ``request_<key>_*``.

    A string ``image`` with no ``case_id`` in the item sets ``case_id`` to :func:`case_name` of it.

    Args:
        keys: the image key (``"image"``).
        metadata_file: the bundle's ``configs/metadata.json`` (channel order from ``channel_def``).

    Example:
        >>> t = CaseFilesd("image", "bundles/vae_baseline/configs/metadata.json")
        >>> t({"image": "case/BraTS-MEN-00003-000-t2f.nii.gz", "image_path": "case/BraTS-MEN-00003-000-t2f.nii.gz"})
        {'image': ['case/BraTS-MEN-00003-000-t1c.nii.gz', ...], 'case_id': 'BraTS-MEN-00003-000',
         'request_image_path': 'case/...-t2f.nii.gz'}
    """

    def __init__(self, keys: str | Sequence[str], metadata_file: str) -> None:
        super().__init__(keys)
        self.channels = {k: _channel_names(metadata_file, str(k)) for k in self.keys}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, Path)) and d.get("case_id") is None:
                d["case_id"] = case_name(str(d[key]), self.channels[key])
            d[key] = case_files(d[key], self.channels[key])
            for name in [k for k in d if isinstance(k, str) and k.startswith(f"{key}_")]:
                if isinstance(d[name], str):
                    d[REQUEST_PREFIX + name] = d.pop(name)
        return d
