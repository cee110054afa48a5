"""MONAI Label app serving the encoder bundles: reconstruction (``<bundle>``) and encoding (``<bundle>_encode``).

Start it in MONAI Label's own environment (see ``docs/monai_label.md``)::

    monailabel start_server --app monailabel_app --studies STUDIES --host 127.0.0.1 --port 8000 \\
        --conf bundles "dist/vae_baseline,dist/dipvae"

``bundles`` is a comma-separated list of bundle folders (unzipped ``python -m custom export-bundle`` output:
``configs/inference.json``, ``models/model.pt``, ``custom/``). Each encoder bundle gives two models:

* ``<name>``: the bundle's ``inference.json`` run by MONAI Label's ``BundleInferTask`` (``network_def`` is the
  single-tensor reconstruction; the bundle's ``Invertd`` maps it back to the input's space); the answer is the
  reconstruction as a 4-channel NIfTI written by MONAI's ``SaveImage``, as ``monai.bundle run`` writes it (MONAI
  Label's own writer would write a multi-channel output as a ``.seg.nrrd`` label map).
* ``<name>_encode``: the same preprocessing and weights through :class:`custom.networks.EncoderNet`; the answer is
  JSON ``{"mu": [...], "logvar": [...]}`` (the posterior of the case).

The studies folder holds BraTS-MEN case files side by side (``<case>-t1c.nii.gz``, ``-t1n``, ``-t2f``, ``-t2w``:
posting any one of them as the image reads all four) or one 4D NIfTI per case. A forecasting bundle
(latent_ode) is added by giving its folder in ``bundles``: its ``network_def`` output is served the same way
as the reconstruction (hook: :func:`tasks_for_bundle`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Sequence

import torch
from monai.transforms import SaveImage
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.tasks.infer.bundle import BundleInferTask

logger = logging.getLogger(__name__)


class BundleReconstructTask(BundleInferTask):
    """The bundle's ``inference.json`` as it is; the output is written like the bundle's ``SaveImaged`` writes it.

    The bundle's ``Invertd`` already puts ``pred`` in the input's space, so MONAI Label's ``Restored`` (nearest
    resize, meant for label maps) is not added.
    """

    def __init__(self, path: str, conf: Dict[str, str], **kwargs: Any) -> None:
        super().__init__(path, conf, add_post_restore=False, **kwargs)
        if self.valid:
            self.description = "posterior-mean reconstruction of the case, 4 channels (NIfTI)"

    def writer(self, data: Dict[str, Any], extension: Any = None, dtype: Any = None):
        out_dir = Path(tempfile.mkdtemp(prefix="monailabel_recon_"))
        pred = data[self.output_label_key]
        saver = SaveImage(
            output_dir=str(out_dir),
            output_postfix="recon",
            output_ext=".nii.gz",
            resample=False,
            separate_folder=False,
            output_dtype=torch.float32,
            print_log=False,
        )
        saver(pred, meta_data=pred.meta)
        (written,) = out_dir.glob("*.nii.gz")
        return str(written), {"shape": list(pred.shape), "case": data.get("case_id", written.name)}


class BundleEncodeTask(BundleInferTask):
    """The bundle's preprocessing and weights, ``EncoderNet`` as the network; JSON ``mu`` / ``logvar`` out."""

    def __init__(self, path: str, conf: Dict[str, str], **kwargs: Any) -> None:
        super().__init__(path, conf, post_filter=None, add_post_restore=False, **kwargs)
        if not self.valid:
            return
        import sys

        sys.path.insert(0, path)
        try:
            from custom.networks import EncoderNet

            self.network = EncoderNet(self.bundle_config.get_parsed_content("vae", instantiate=True))
        finally:
            sys.path.remove(path)
        self.description = "posterior mean and log-variance of the case (JSON)"

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        return []

    def writer(self, data: Dict[str, Any], extension: Any = None, dtype: Any = None):
        out = torch.as_tensor(data[self.output_label_key]).float().flatten()
        mu, logvar = out.chunk(2)
        return None, {"mu": mu.tolist(), "logvar": logvar.tolist()}


def tasks_for_bundle(path: str, conf: Dict[str, str]) -> Dict[str, InferTask]:
    """The models one bundle folder gives: ``<name>`` (its ``network_def``) and, for encoders, ``<name>_encode``."""
    name = os.path.basename(os.path.normpath(path))
    tasks: Dict[str, InferTask] = {name: BundleReconstructTask(path, conf)}
    parsed = tasks[name].bundle_config if tasks[name].is_valid() else None
    if parsed is not None and "vae" in parsed:
        tasks[f"{name}_encode"] = BundleEncodeTask(path, conf)
    return {k: v for k, v in tasks.items() if v.is_valid()}


class MenGrowthApp(MONAILabelApp):
    """Serves every bundle folder listed in ``--conf bundles``."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        listed = [p.strip() for p in conf.get("bundles", "").split(",") if p.strip()]
        if not listed:
            raise ValueError("monailabel_app: give the bundle folders to serve with --conf bundles 'dir1,dir2'")
        missing = [p for p in listed if not os.path.isfile(os.path.join(p, "configs", "inference.json"))]
        if missing:
            raise ValueError(f"monailabel_app: {missing} hold no configs/inference.json (unzip an exported bundle)")
        self.bundle_dirs = [os.path.abspath(p) for p in listed]
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="MenGrowth bundles", version="0.1.0")

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for path in self.bundle_dirs:
            infers.update(tasks_for_bundle(path, self.conf))
        logger.info("monailabel_app serves %s", sorted(infers))
        return infers
