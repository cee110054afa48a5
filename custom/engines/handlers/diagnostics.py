"""Validation-time collapse diagnostics, image quality and latent probes (evaluator handler).

Collects the evaluation step's per-sample outputs over a whole pass, then computes at
``EPOCH_COMPLETED`` (all on the CPU, once per validation, never per training step):

* ``val_epoch/*``: loss at beta = 1 (recon + KL), MSE from mu, per-modality SSIM/PSNR in the brain mask;
* ``diag/*``: active units (Burda et al. 2015), KL against the free-bits floor, mu variance, logvar mean,
  z std, reconstruction from mu vs z = 0 vs a sample (:func:`custom.metrics.collapse.collapse_summary`);
* ``probe/r2_*``: linear probes from mu to the segmentation factors. With ``probe_fit_latents`` (evaluate.json
  encodes the training split first) the probe is fitted on those latents and scored on this pass's subjects,
  which neither the encoder nor the probe saw; the within-pass cross-validated probe (folds by subject) is then
  ``probe_cv/r2_*``. During training the fit set is the last training epoch's mu (``probe_fit_source``, kept by the
  training step), so ``probe/r2_*`` is the same held-out protocol. Without either, ``probe/r2_*`` is the
  cross-validated probe. The within-pass probe chooses its ridge penalty by nested cross-validation; with 128
  latents and a few dozen subjects it stays near or below 0 even for codes whose held-out probe is high;
* optionally (``disentanglement=True``, used by ``evaluate.json``) DCI, SAP, MIG with oracle and null,
  Gaussian total correlation and the off-diagonal covariance of mu.

The collected arrays stay on ``engine.state.latents`` for other handlers (figures, exports).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from custom.data.factors import DEFAULT_FACTOR_GROUPS, FACTOR_NAMES

logger = logging.getLogger(__name__)


class ValidationDiagnostics:
    """Evaluator handler; see the module docstring.

    Args:
        free_bits: nats per dimension (the KL floor the diagnostics compare against).
        probes: fit cross-validated linear probes when factors are available.
        disentanglement: also compute DCI, SAP, MIG (+oracle/null), total correlation and covariance.
        partition: latent partition of an Exp3 encoder (``{"vol": [0], "loc": [1, 2, 3], ...}``), to report
            the partition's own R² (``partition/r2_*``) next to the probes.
        factor_index: the factor (column of ``FACTOR_NAMES``) each partition coordinate is supervised on, same
            keys as ``partition``; default :data:`custom.data.factors.DEFAULT_FACTOR_GROUPS`.
        metrics_json: write all scalar results there when the run completes (evaluate.json uses it): this
            handler's and those later ``EPOCH_COMPLETED`` handlers put in ``engine.state.metrics`` (``traversal/*``).
        latents_out: write mu, logvar, factors and ids to this ``.npz`` (evaluate.json uses it).
        min_probe_subjects: minimum number of labelled subjects to fit probes.
        probe_fit_latents: ``.npz`` written by another pass's ``latents_out`` (mu, factors, subject_id) to fit the
            probes on; this pass then only scores them (held-out protocol).
        probe_select_latents: ``.npz`` of a third split (validation subjects) on which the probes' ridge penalty is
            chosen (:func:`custom.metrics.probes.held_out_probe_r2`); without it, CV over the fit subjects.
        probe_fit_source: :class:`custom.engines.latent_buffer.TrainingLatents` filled by the training step: when no
            ``probe_fit_latents`` file is given, the probes are fitted on the last training epoch's mu and scored on
            this pass's subjects (``probe/r2_*``), next to the within-pass CV probe (``probe_cv/r2_*``).
    """

    def __init__(
        self,
        free_bits: float = 0.0,
        probes: bool = True,
        disentanglement: bool = False,
        partition: dict[str, list[int]] | None = None,
        metrics_json: str | None = None,
        latents_out: str | None = None,
        min_probe_subjects: int = 4,
        probe_fit_latents: str | None = None,
        factor_index: dict[str, list[int]] | None = None,
        probe_select_latents: str | None = None,
        probe_fit_source: Any = None,
    ) -> None:
        self.free_bits = float(free_bits)
        self.probes = probes
        self.disentanglement = disentanglement
        self.partition = dict(partition or {})
        self.factor_index = dict(factor_index or {})
        self.metrics_json = metrics_json
        self.latents_out = latents_out
        self.min_probe_subjects = int(min_probe_subjects)
        self.probe_fit_latents = probe_fit_latents
        self.probe_select_latents = probe_select_latents
        self.probe_fit_source = probe_fit_source
        self._rows: list[dict[str, Any]] = []
        self._payload: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._compute)
        engine.add_event_handler(Events.COMPLETED, self._write_metrics_json)

    def _reset(self, engine: Engine) -> None:
        self._rows = []
        self._payload = None

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        if isinstance(out, dict):
            self._rows.append(out)

    def _fit_latents(
        self, mu: np.ndarray, factors: np.ndarray, which: str = "probe_fit_latents"
    ) -> dict[str, np.ndarray] | None:
        """The ``.npz`` named by attribute ``which`` as arrays (mu, factors, subject_id), or None when not
        configured/written."""
        name = getattr(self, which)
        if not name:
            return None
        path = Path(name)
        if not path.exists():
            logger.warning(
                "%s %s does not exist: %s",
                which,
                path,
                (
                    "probes are cross-validated within this pass"
                    if which == "probe_fit_latents"
                    else "the probes' penalty is chosen by CV over the fit subjects"
                ),
            )
            return None
        with np.load(path) as fit:
            out = {k: fit[k] for k in ("mu", "factors", "subject_id")}
        if out["factors"].shape[1] != factors.shape[1] or out["mu"].shape[1] != mu.shape[1]:
            raise ValueError(
                f"{path}: latents/factors of another shape than this pass "
                f"({out['mu'].shape}, {out['factors'].shape} vs {mu.shape}, {factors.shape})"
            )
        return out

    def _source_latents(self, mu: np.ndarray, factors: np.ndarray) -> dict[str, np.ndarray] | None:
        """The training epoch's latents from ``probe_fit_source`` when they have enough labelled subjects."""
        fit = self.probe_fit_source.arrays() if self.probe_fit_source is not None else None
        if fit is None or fit["mu"].shape[1] != mu.shape[1] or fit["factors"].shape[1] != factors.shape[1]:
            return None
        labelled = np.isfinite(fit["factors"][:, 0])
        if len(set(fit["subject_id"][labelled].tolist())) < self.min_probe_subjects:
            return None
        return fit

    @staticmethod
    def _held_out_probe(
        fit: dict[str, np.ndarray] | None,
        mu: np.ndarray,
        factors: np.ndarray,
        select: dict[str, np.ndarray] | None = None,
    ) -> dict[str, float] | None:
        """R² per factor of a probe fitted on ``fit`` (the probe-fit latents), its penalty chosen on ``select``
        (validation latents) when given, scored on ``(mu, factors)``."""
        if fit is None:
            return None
        from custom.metrics.probes import held_out_probe_r2

        sel = (
            {}
            if select is None
            else {"mu_select": select["mu"], "factors_select": select["factors"], "groups_select": select["subject_id"]}
        )
        res = held_out_probe_r2(
            fit["mu"], fit["factors"], mu, factors, list(FACTOR_NAMES), groups_fit=fit["subject_id"], **sel
        )
        return {**res["r2"], "_alpha_from_validation": float(res["alpha_from"] == "validation")}

    # ------------------------------------------------------------------
    def _compute(self, engine: Engine) -> None:
        if not self._rows:
            return
        from custom.metrics.collapse import collapse_summary, kl_per_dim_gaussian

        rows = self._rows
        mu = torch.cat([r["mu"] for r in rows]).numpy().astype(np.float64)
        logvar = torch.cat([r["logvar"] for r in rows]).numpy().astype(np.float64)
        mse_mu = torch.cat([r["mse_mu"] for r in rows]).numpy()
        mse_z0 = torch.cat([r["mse_z0"] for r in rows]).numpy()
        mse_s = torch.cat([r["mse_sampled"] for r in rows]).numpy()
        case_ids = [c for r in rows for c in r["case_id"]]
        subjects = [s for r in rows for s in r["subject_id"]]
        factors = torch.cat([r["factors"] for r in rows]).numpy() if all("factors" in r for r in rows) else None
        weights = np.array([r["batch_size"] for r in rows], dtype=np.float64)

        m: dict[str, Any] = {}
        m["val_epoch/recon"] = float(np.average([float(r["val_recon"]) for r in rows], weights=weights))
        m["val_epoch/kl_raw"] = float(np.average([float(r["val_kl"]) for r in rows], weights=weights))
        m["val_epoch/loss"] = m["val_epoch/recon"] + m["val_epoch/kl_raw"]
        m["val_epoch/mse"] = float(mse_mu.mean())
        for key in rows[0]["image_metrics"]:
            vals = [r["image_metrics"][key] for r in rows]
            m[f"val_epoch/{key}"] = float(np.average(vals, weights=weights))

        summary = collapse_summary(
            mu,
            logvar,
            kl_per_dim=kl_per_dim_gaussian(mu, logvar),
            free_bits=self.free_bits,
            recon_mu_mse=float(mse_mu.mean()),
            recon_z0_mse=float(mse_z0.mean()),
            recon_sampled_mse=float(mse_s.mean()),
        )
        for key, value in summary.items():
            if isinstance(value, (bool, int, float, np.floating, np.integer)):
                m[f"diag/{key}"] = float(value)
        verdict = summary.get("verdict", "")

        extra: dict[str, Any] = {}
        labelled = factors is not None and np.isfinite(factors[:, 0]).sum() > 0
        n_subj = len({s for s, f in zip(subjects, factors[:, 0]) if np.isfinite(f)}) if labelled else 0
        enough = labelled and n_subj >= self.min_probe_subjects
        fit = None
        if enough and (self.probes or self.disentanglement):
            fit = self._fit_latents(mu, factors) or self._source_latents(mu, factors)
        if self.probes and enough:
            from custom.metrics.probes import PROBE_ALPHAS, linear_probe_r2

            probe = linear_probe_r2(mu, factors, list(FACTOR_NAMES), groups=subjects, alpha=PROBE_ALPHAS)["r2"]
            select = self._fit_latents(mu, factors, "probe_select_latents") if fit is not None else None
            held_out = self._held_out_probe(fit, mu, factors, select)
            if held_out is not None:
                m["probe/alpha_from_validation"] = held_out.pop("_alpha_from_validation")
            prefix = "probe_cv/" if held_out is not None else "probe/"
            for group, values in ((prefix, probe), ("probe/", held_out)):
                if values is None:
                    continue
                for name in FACTOR_NAMES:
                    if name in values:
                        m[f"{group}r2_{name}"] = float(values[name])
                m[f"{group}r2_centroid"] = float(np.nanmean([values.get(f"centroid_{a}", np.nan) for a in "xyz"]))
            if self.partition:
                m.update(_partition_r2(mu, factors, self.partition, self.factor_index))
        if self.disentanglement and enough:
            extra = _disentanglement(mu, factors, subjects, fit)
            for key, value in extra.items():
                if isinstance(value, (int, float)):
                    m[key] = float(value)

        engine.state.metrics.update(m)
        engine.state.latents = {
            "mu": mu,
            "logvar": logvar,
            "factors": factors,
            "case_id": case_ids,
            "subject_id": subjects,
            "mse_mu": mse_mu,
            "mse_z0": mse_z0,
        }
        engine.state.collapse_verdict = verdict
        logger.info(
            "validation: %s | AU %d/%d | recon mu %.4f z0 %.4f",
            verdict,
            int(summary["au_count"]),
            mu.shape[1],
            mse_mu.mean(),
            mse_z0.mean(),
        )
        self._payload = {
            "n_cases": len(case_ids),
            "n_subjects": len(set(subjects)),
            "verdict": verdict,
            "details": {k: v for k, v in extra.items() if not isinstance(v, (int, float))},
        }
        if self.latents_out:
            path = Path(self.latents_out)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(
                path,
                mu=mu,
                logvar=logvar,
                factors=factors if factors is not None else np.zeros((len(mu), 0)),
                factor_names=np.array(FACTOR_NAMES),
                case_id=np.array(case_ids),
                subject_id=np.array(subjects),
            )

    def _write_metrics_json(self, engine: Engine) -> None:
        payload = self._payload
        if not self.metrics_json or payload is None:
            return
        metrics = {k: float(v) for k, v in engine.state.metrics.items() if isinstance(v, (int, float, np.number))}
        path = Path(self.metrics_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**payload, "metrics": metrics}, indent=1, default=_json_default))


def _partition_r2(
    mu: np.ndarray,
    factors: np.ndarray,
    partition: dict[str, list[int]],
    factor_index: dict[str, list[int]] | None = None,
) -> dict[str, float]:
    """Held-out-free R² of the partition's own coordinates against their factors (affine fit per coordinate).

    The supervised coordinates are trained to equal the standardised factor, so an affine 1-D fit
    (squared Pearson correlation) is the fair score; the probes above give the cross-validated view.
    """
    from custom.metrics.probes import single_latent_r2

    out: dict[str, float] = {}
    names = {g: [FACTOR_NAMES[i] for i in idx] for g, idx in (factor_index or {}).items()}
    names = {g: list(v) for g, v in DEFAULT_FACTOR_GROUPS.items()} | names
    for group, coords in partition.items():
        for coord, fname in zip(coords, names.get(group, [])):
            j = FACTOR_NAMES.index(fname)
            ok = np.isfinite(factors[:, j])
            if ok.sum() > 2:
                out[f"partition/r2_{fname}"] = float(single_latent_r2(mu[ok][:, [coord]], factors[ok, j])[0])
    vol = partition.get("vol", [])
    j = FACTOR_NAMES.index("log_volume")
    ok = np.isfinite(factors[:, j])
    if vol and ok.sum() > 2:
        # "no other single latent predicts log-volume better than z_vol": the best of all other coordinates
        r2 = single_latent_r2(mu[ok], factors[ok, j])
        others = [k for k in range(mu.shape[1]) if k not in set(vol)]
        best = max(others, key=lambda k: r2[k]) if others else None
        if best is not None:
            out["partition/best_other_r2_log_volume"] = float(r2[best])
            out["partition/best_other_coord_log_volume"] = float(best)
    return out


def _disentanglement(
    mu: np.ndarray, factors: np.ndarray, subjects: list[str], fit: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """DCI, SAP (regressors fitted on ``fit`` -- the training split's encodings -- when given, else on a
    subject-grouped split of this pass), MIG with oracle and null, total correlation and covariance of mu."""
    from custom.metrics.covariance import offdiag_covariance
    from custom.metrics.dci import dci
    from custom.metrics.mig import mig_with_references
    from custom.metrics.sap import sap
    from custom.metrics.total_correlation import gaussian_total_correlation

    ok = np.isfinite(factors).all(axis=1)
    mu_l, f_l, g_l = mu[ok], factors[ok], [s for s, k in zip(subjects, ok) if k]
    names = list(FACTOR_NAMES)
    out: dict[str, Any] = {}
    split = None
    if fit is not None:
        ok_fit = np.isfinite(fit["factors"]).all(axis=1)
        n_fit = int(ok_fit.sum())
        mu_l = np.vstack([fit["mu"][ok_fit], mu_l])
        f_l = np.vstack([fit["factors"][ok_fit], f_l])
        g_l = [str(s) for s in fit["subject_id"][ok_fit]] + [str(s) for s in g_l]
        split = (np.arange(n_fit), np.arange(n_fit, len(mu_l)))
        out["dci/protocol"] = "fit on the training split, scored on this split"
    d = dci(mu_l, f_l, names, groups=g_l, split=split)
    out.update({f"dci/{k}": v for k, v in d.items()})
    s = sap(mu_l, f_l, names, groups=g_l, split=split)
    out.update({f"sap/{k}": v for k, v in s.items()})
    mg = mig_with_references(mu[ok], factors[ok], names)  # MIG fits nothing: this split only
    out.update({f"mig/{k}": v for k, v in mg.items()})
    out["tc/gaussian_total_correlation"] = float(gaussian_total_correlation(mu))
    out.update({f"cov/{k}": v for k, v in offdiag_covariance(mu).items()})
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    return str(obj)
