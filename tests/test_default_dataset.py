"""A fresh machine: when ``dataset_dir`` does not exist, the bundles generate the synthetic cohort there first
(for the default ``data/synthetic``, or any folder with ``generate_synthetic`` true)."""

from __future__ import annotations

import json
from pathlib import Path

from custom.data.dataset import prepare_datalist


def test_missing_dataset_dir_gets_the_synthetic_cohort(tmp_path: Path) -> None:
    root = tmp_path / "data" / "synthetic"
    datalist = prepare_datalist(
        str(root),
        str(root / "datalist.json"),
        synthetic={"subjects": 3, "timepoints": 2, "seed": 0},
        spacing=7.5,
        workers=1,
        generate_synthetic=True,
    )
    dl = json.loads(Path(datalist).read_text())
    items = [it for k in ("training", "validation", "test") for it in dl.get(k, [])]
    assert len(items) == 6 and (root / "cohort.csv").exists()
    subjects_per_split = [{it["subject_id"] for it in dl.get(k, [])} for k in ("training", "validation", "test")]
    assert not (subjects_per_split[0] & subjects_per_split[1]) and not (subjects_per_split[0] & subjects_per_split[2])
    # generated at the training spacing: 240 mm / 7.5 mm = 32 voxels
    import nibabel as nib

    img = nib.load(str(root / items[0]["image"][0]))
    assert img.shape[0] == 32 and abs(float(img.header.get_zooms()[0]) - 7.5) < 1e-6
    # a second call reuses it
    assert prepare_datalist(str(root), str(root / "datalist.json")) == datalist
