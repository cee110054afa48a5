"""MONAI Label app serving the bundles: the encoders' reconstruction (``<bundle>``) and encoding
(``<bundle>_encode``), and latent_ode's growth forecast (``latent_ode``).

Start it in MONAI Label's own environment (see ``docs/monai_label.md``)::

    monailabel start_server --app monailabel_app --studies STUDIES --host 127.0.0.1 --port 8000 \\
        --conf bundles "dist/vae_baseline,dist/dipvae,dist/latent_ode"

``bundles`` is a comma-separated list of bundle folders (unzipped ``python -m custom export-bundle`` output:
``configs/inference.json``, ``models/model.pt``, ``custom/``). Each encoder bundle gives two models:

* ``<name>``: the bundle's ``preprocessing``, ``network_def`` (the single-tensor reconstruction), ``inferer`` and
  ``postprocessing`` (its ``Invertd`` maps the output back to the input's space); the answer is the
  reconstruction as a 4-channel NIfTI written by MONAI's ``SaveImage``, as ``monai.bundle run`` writes it.
* ``<name>_encode``: the same preprocessing and weights through :class:`custom.networks.EncoderNet`; the answer is
  JSON ``{"mu": [...], "logvar": [...]}`` (the posterior of the case).

A forecasting bundle (latent_ode: its ``inference.json`` has ``forecast``) gives ``<name>``: posting any file of a
subject's scan runs the bundle's forecast (``custom.ode.forecast.forecast_subject``) on all of that subject's
scans in the studies folder (``custom.ode.studies``: BraTS-MEN case files or one 4D NIfTI per scan, times from
``times.csv``), from the first ``n_observed`` scans (request parameter; default the bundle's) to the remaining
scan times and +1 yr, or to ``target_times``. The answer is the forecast JSON (volumes, predictive sd, growth
probabilities, latents) and, as the file, the decoded image at the first target time.

The studies folder holds BraTS-MEN case files side by side (``<case>-t1c.nii.gz``, ``-t1n``, ``-t2f``, ``-t2w``:
posting any one of them as the image reads all four) or one 4D NIfTI per case.

The tasks are built on MONAI Label's ``BasicInferTask`` / ``InferTask`` and read the bundle's configs with MONAI's
``ConfigParser``; MONAI Label's ``BundleInferTask`` is not used, because its module imports torchvision, whose
PyPI wheels for recent torch are CUDA builds that cannot load beside a CPU torch (the light environment of
``scripts/monailabel_env.sh`` reuses the system torch).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Sequence, Tuple

import torch
from monai.bundle import ConfigParser
from monai.inferers import Inferer
from monai.transforms import Compose, SaveImage, SaveImaged
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

logger = logging.getLogger(__name__)


@contextmanager
def on_path(path: str) -> Iterator[None]:
    """``path`` first on ``sys.path`` meanwhile (the bundle's ``custom`` package), as ``monai.bundle run`` does."""
    sys.path.insert(0, path)
    try:
        yield
    finally:
        sys.path.remove(path)


def bundle_parser(path: str) -> ConfigParser:
    """The bundle's ``configs/inference.json`` with ``bundle_root`` set to ``path``."""
    parser = ConfigParser()
    parser.read_config(os.path.join(path, "configs", "inference.json"))
    parser.config.update({"bundle_root": path})  # type: ignore[union-attr]
    return parser


class BundleTask(BasicInferTask):
    """A bundle's ``preprocessing``, ``network_def`` (or the ``network`` given), ``inferer`` and ``postprocessing``
    (its ``SaveImaged`` left out: the task writes the answer), weights ``models/model.pt`` loaded strictly."""

    def __init__(self, path: str, conf: Dict[str, str], description: str, network: Any = None) -> None:
        self.bundle_path = path
        self.bundle_config = bundle_parser(path)
        meta = json.loads(Path(path, "configs", "metadata.json").read_text())
        if network is None:
            with on_path(path):
                network = self.bundle_config.get_parsed_content("network_def", instantiate=True)
        super().__init__(
            path=os.path.join(path, "models", "model.pt"),
            network=network,
            type=InferType.OTHERS,
            labels={},
            dimension=3,
            description=description,
            load_strict=True,
            preload=conf.get("preload", "false").lower() == "true",
        )
        self.version = meta.get("version")

    def info(self) -> Dict[str, Any]:
        return {**super().info(), "version": self.version}

    def _parsed(self, key: str) -> Any:
        with on_path(self.bundle_path):
            return self.bundle_config.get_parsed_content(key, instantiate=True)

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        pre = self._parsed("preprocessing")
        return list(pre.transforms) if isinstance(pre, Compose) else list(pre)

    def inferer(self, data: Any = None) -> Inferer:
        return self._parsed("inferer")

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        post = self._parsed("postprocessing")
        post = list(post.transforms) if isinstance(post, Compose) else list(post)
        return [t for t in post if not isinstance(t, SaveImaged)]


class BundleReconstructTask(BundleTask):
    """The bundle's ``inference.json`` as it is; the output is written like the bundle's ``SaveImaged`` writes it.

    The bundle's ``Invertd`` already puts ``pred`` in the input's space (no resize of the answer is added).
    """

    def __init__(self, path: str, conf: Dict[str, str]) -> None:
        super().__init__(path, conf, "posterior-mean reconstruction of the case, 4 channels (NIfTI)")

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


class BundleEncodeTask(BundleTask):
    """The bundle's preprocessing and weights, ``EncoderNet`` as the network; JSON ``mu`` / ``logvar`` out."""

    def __init__(self, path: str, conf: Dict[str, str]) -> None:
        with on_path(path):
            from custom.networks import EncoderNet

            network = EncoderNet(bundle_parser(path).get_parsed_content("vae", instantiate=True))
        super().__init__(path, conf, "posterior mean and log-variance of the case (JSON)", network=network)

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        return []

    def writer(self, data: Dict[str, Any], extension: Any = None, dtype: Any = None):
        out = torch.as_tensor(data[self.output_label_key]).float().flatten()
        mu, logvar = out.chunk(2)
        return None, {"mu": mu.tolist(), "logvar": logvar.tolist()}


class ForecastTask(InferTask):
    """latent_ode's forecast of the subject of the posted scan (see the module docstring).

    Request parameters (MONAI Label's ``params``): ``n_observed`` (int), ``target_times`` (years, a list),
    ``use_segmentations`` (bool); each defaults to the bundle's ``inference.json``.
    """

    def __init__(self, path: str, conf: Dict[str, str]) -> None:
        self.bundle_path = path
        parser = bundle_parser(path)
        self.defaults = {k: parser.get(k) for k in ("n_observed", "target_times", "use_segmentations")}
        with on_path(path):
            self.encoder_bundle = parser.get_parsed_content("encoder_bundle")
            self.ode_dir = parser.get_parsed_content("ode_dir")
        self.version = json.loads(Path(path, "configs", "metadata.json").read_text()).get("version")
        super().__init__(
            type=InferType.OTHERS,
            labels=None,
            dimension=3,
            description="growth forecast of the subject's scans in the studies folder (JSON + decoded NIfTI)",
            config=dict(self.defaults),
        )

    def is_valid(self) -> bool:
        return os.path.isfile(os.path.join(self.ode_dir, "model.pt"))

    def info(self) -> Dict[str, Any]:
        return {**super().info(), "version": self.version}

    def __call__(self, request: Dict[str, Any]) -> Tuple[str | None, Dict[str, Any]]:
        options = {k: request.get(k, v) for k, v in self.defaults.items()}
        out = tempfile.mkdtemp(prefix="monailabel_forecast_")
        with on_path(self.bundle_path):
            from custom.ode.forecast import forecast_subject
            from custom.ode.studies import subject_scans_in_folder

            scans = subject_scans_in_folder(str(request["image"]))
            result = forecast_subject(
                encoder_bundle=self.encoder_bundle,
                ode_dir=self.ode_dir,
                output_dir=out,
                scans=scans,
                n_observed=int(options["n_observed"]),
                target_times=options["target_times"],
                use_segmentations=options["use_segmentations"],
                device="cpu",
            )
        return (result["images"][0] if result["images"] else None), result


def tasks_for_bundle(path: str, conf: Dict[str, str]) -> Dict[str, InferTask]:
    """The models one bundle folder gives: a forecast (``<name>``) for a forecasting bundle; otherwise ``<name>``
    (its ``network_def``) and, for encoders, ``<name>_encode``."""
    name = os.path.basename(os.path.normpath(path))
    parser = bundle_parser(path)
    if "forecast" in parser.config:  # type: ignore[operator]
        tasks: Dict[str, InferTask] = {name: ForecastTask(path, conf)}
    else:
        tasks = {name: BundleReconstructTask(path, conf)}
        if "vae" in parser.config:  # type: ignore[operator]
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
