"""Figure handlers: reconstruction panels (+ NIfTI) at validation, and the training dashboard."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


class ReconstructionFigures:
    """Evaluator handler: input | reconstruction | |difference| PNGs and reconstruction NIfTIs.

    Writes ``<out_dir>/recon_epoch####_<case>.png`` (``recon_<tag>_<case>.png`` when ``tag`` is given, e.g.
    by evaluate.json, whose evaluator has no training epoch) and ``..._recon.nii.gz`` (in the preprocessed
    geometry, with the MetaTensor affine) for the cases the eval step kept, and adds the first panel to TensorBoard
    when a ``summary_writer`` is given. The three planes pass through the tumour's centre of mass when the case has
    a segmentation (else the volume centre).

    ``every`` counts training epochs, like ``val_interval`` and ``checkpoint_interval``: figures are written at the
    first validation pass, then at the first pass at or after each multiple of ``every`` epochs (``val_interval 10
    figure_interval 40`` over 80 epochs: epochs 10, 40, 80). Counting passes instead made ``figure_interval 40``
    mean "every 400 epochs" under ``val_interval 10``.
    """

    def __init__(
        self, out_dir: str, every: int = 1, save_nifti: bool = True, summary_writer: Any = None, tag: str | None = None
    ) -> None:
        self.tag = tag
        self.out_dir = Path(out_dir)
        self.every = max(1, int(every))
        self.save_nifti = save_nifti
        self.writer = summary_writer
        self._last_slot: int | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._kept: list[dict[str, Any]] = []

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        if isinstance(out, dict) and "kept" in out:
            self._kept.append(out["kept"])

    def _write(self, engine: Engine) -> None:
        from custom.plots.recon import plot_reconstruction

        epoch = int(engine.state.epoch)
        slot = epoch // self.every
        if (self._last_slot is not None and slot <= self._last_slot) or not getattr(self, "_kept", None):
            return
        self._last_slot = slot
        self.out_dir.mkdir(parents=True, exist_ok=True)
        first_png = None
        for kept in self._kept:
            for i, case in enumerate(kept["case_id"]):
                x = kept["x"][i].numpy()
                x_hat = kept["x_hat"][i].numpy()
                when = self.tag or f"epoch{epoch:04d}"
                stem = f"recon_{when}_{case}"
                segs = kept.get("seg")
                seg = segs[i] if segs is not None and np.any(segs[i] > 0) else None
                png = plot_reconstruction(
                    x,
                    x_hat,
                    str(self.out_dir / f"{stem}.png"),
                    seg=seg,
                    title=f"{case} - {self.tag or f'epoch {epoch}'} (reconstruction from mu; "
                    f"planes through {'the tumour' if seg is not None else 'the centre'})",
                )
                first_png = first_png or png
                if self.save_nifti:
                    affine = kept["affine"][i] if kept["affine"][i] is not None else np.eye(4)
                    img = np.moveaxis(x_hat, 0, -1).astype(np.float32)  # [D,H,W,C]
                    nib.save(nib.Nifti1Image(img, affine), str(self.out_dir / f"{stem}_recon.nii.gz"))
        if self.writer is not None and first_png:
            import matplotlib.image as mpimg

            arr = mpimg.imread(first_png)[..., :3]
            self.writer.add_image("val/reconstruction", arr, global_step=epoch, dataformats="HWC")


class DashboardWriter:
    """Trainer handler: redraw the training dashboard PNG from the tidy CSV every ``every`` epochs and at the end."""

    def __init__(self, metrics_csv: str, out_png: str, every: int = 5, title: str = "") -> None:
        self.metrics_csv = metrics_csv
        self.out_png = out_png
        self.every = max(1, int(every))
        self.title = title

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from custom.plots.dashboard import plot_dashboard

        if Path(self.metrics_csv).exists():
            plot_dashboard(self.metrics_csv, self.out_png, title=self.title)


class EvaluationFigures:
    """Evaluator handler for ``evaluate.json``: the training dashboard and a latent traversal, after the pass.

    With segmentations on the kept cases it also measures whether the traversal moves the tumour
    (:mod:`custom.metrics.traversal_response`) around each kept case, and writes ``traversal_response.json``
    next to the PNG; the partition's summary values go to ``engine.state.metrics`` as ``traversal/*`` (and from
    there into ``metrics.json``, which :class:`ValidationDiagnostics` writes when the run completes).
    """

    def __init__(
        self,
        metrics_csv: str,
        dashboard_png: str,
        traversal_png: str,
        network: Any,
        partition: dict[str, list[int]] | None = None,
        steps: int = 7,
        span: float = 2.0,
    ) -> None:
        self.metrics_csv = metrics_csv
        self.dashboard_png = dashboard_png
        self.traversal_png = traversal_png
        self.network = network
        self.partition = partition
        self.steps = steps
        self.span = span
        self._kept: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._kept.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        if isinstance(out, dict) and "kept" in out:
            self._kept.append(out["kept"])

    def __call__(self, engine: Engine) -> None:
        from custom.plots.dashboard import plot_dashboard
        from custom.traversal import write_traversal

        if Path(self.metrics_csv).exists():
            plot_dashboard(self.metrics_csv, self.dashboard_png, title="training dashboard")
        else:
            logger.warning("no %s: dashboard skipped (train first)", self.metrics_csv)
        latents = getattr(engine.state, "latents", None)
        if latents is None or len(latents["mu"]) < 2:
            return
        trav = write_traversal(
            self.network,
            latents["mu"],
            self.traversal_png,
            partition=self.partition,
            steps=self.steps,
            span=self.span,
            device=engine.state.device,
        )
        try:
            engine.state.metrics.update(self._response(engine, latents["mu"], trav))
        except ValueError as err:  # no tumour on the kept cases, or nothing to calibrate on
            logger.info("traversal response not measured: %s", err)

    def _response(self, engine: Engine, mu: np.ndarray, trav: Any) -> dict[str, float]:
        """Traversal response around every kept case with a segmentation; writes traversal_response.json."""
        import json

        from custom.metrics.traversal_response import traversal_response, tumour_threshold
        from custom.traversal import traversal_images

        cases = [
            (k["x"][i, 0].numpy(), k["seg"][i], k["affine"][i], k["case_id"][i])
            for k in self._kept
            for i in range(len(k["case_id"]))
            if k.get("seg") is not None
        ]
        if not cases:
            raise ValueError("the kept cases have no segmentation")
        tau = tumour_threshold(np.stack([c[0] for c in cases]), np.stack([c[1] for c in cases]))
        coords, values = trav.coords, trav.values
        rows = {c: r for r, c in enumerate(engine.state.latents.get("case_id", []))}
        per_case = []
        for _, _, affine, case_id in cases:
            if case_id not in rows:
                continue
            n = rows[case_id]
            imgs = (
                trav.images
                if n == 0
                else traversal_images(
                    self.network,
                    mu[n],
                    coords,
                    trav.spread,
                    steps=self.steps,
                    span=self.span,
                    device=engine.state.device,
                )[0]
            )
            spacing = np.abs(np.asarray(affine, dtype=float)[:3, :3]).sum(0) if affine is not None else np.ones(3)
            r = traversal_response(imgs, values, tau, spacing)
            per_case.append(
                {
                    "case_id": case_id,
                    "volume_spearman": r["volume_spearman"].tolist(),
                    "shift_mm": r["shift_mm"].tolist(),
                    "bright_voxels": r["counts"].tolist(),
                }
            )
        if not per_case:
            raise ValueError("the kept cases are not among the encoded ones")
        rho = np.nanmean([c["volume_spearman"] for c in per_case], axis=0)
        shift = np.nanmean([c["shift_mm"] for c in per_case], axis=0)
        report = {
            "tau": tau,
            "offsets": values,
            "coords": coords,
            "labels": trav.labels,
            "cases": per_case,
            "volume_spearman_mean": rho.tolist(),
            "shift_mm_mean": shift.tolist(),
        }
        out = Path(self.traversal_png).with_name("traversal_response.json")
        out.write_text(json.dumps(report, indent=1, default=float) + "\n")
        metrics: dict[str, float] = {}
        vol = (self.partition or {}).get("vol", [])
        for j, coord in enumerate(coords):
            if coord in vol:
                metrics["traversal/z_vol_volume_spearman"] = float(rho[j])
            for a, axis in enumerate("xyz"):
                if coord in (self.partition or {}).get("loc", [])[a : a + 1]:
                    metrics[f"traversal/z_loc_{axis}_shift_mm"] = float(shift[j, a])
        metrics["traversal/max_abs_volume_spearman"] = float(np.nanmax(np.abs(rho)))
        return metrics
