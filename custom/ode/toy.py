"""A tiny synthetic latent cohort in the trajectories-file format (for tests, demos and smoke runs).

Each subject follows a Gompertz law in log-volume, y(t) = ln K + (ln V0 - ln K) e^{-a t}, observed at
irregular times. Its "encoded" latent is z_vol = (y + e_enc - m) / s on coordinate 0 (declared in
``partition`` with ``vol_scale``), plus ``z_dim - 1`` static subject-specific coordinates with small per-scan
noise. The measured ``log_volume`` factor is y + e_seg (segmentation noise). About 15% of subjects shrink
(V0 > K), 25% are nearly stable (already close to their plateau K: V0 = K e^{-U(0.05, 0.3)}), the rest grow
(V0 = K e^{-U(0.5, 2.5)}); a ~ log-uniform(0.1, 1.2)/yr for all (design §6 meningioma proportions;
``class_probs`` changes them). Near-plateau subjects hide their rate a (their curve is nearly flat whatever a
is), so a test of rate recovery should use ``class_probs=(p_shrink, 0.0)``.
"""

from __future__ import annotations

import numpy as np
import torch

from custom.ode.gompertz import gompertz_log_volume


def make_toy_trajectories(
    n_subjects: int = 60,
    n_times: int = 4,
    z_dim: int = 6,
    enc_noise: float = 0.02,
    seg_noise: float = 0.02,
    split_fractions: tuple[float, float] = (0.6, 0.1),
    class_probs: tuple[float, float] = (0.15, 0.25),
    seed: int = 0,
    rate_latent: bool = False,
) -> dict:
    """Trajectories dict (mu, logvar, subject_id, timepoint, time_years, factors, factor_names, split, truth,
    partition, vol_scale) for ``n_subjects`` x ``n_times`` scans; ``split_fractions`` = (train, validation)
    (the rest is test); ``class_probs`` = (P(shrinking), P(stable)), the rest grows. With ``rate_latent`` the
    static coordinate 1 carries the subject's rate: z_1 = (ln a - ln 0.35) / 0.7 + noise (an image biomarker)."""
    rng = np.random.default_rng(seed)
    m_vol, s_vol = float(np.log(10.0)), 1.0
    rows: dict[str, list] = {k: [] for k in ("mu", "subject_id", "timepoint", "time_years", "factors", "split")}
    truth = {}
    n_tr = int(round(split_fractions[0] * n_subjects))
    n_va = int(round(split_fractions[1] * n_subjects))
    for i in range(n_subjects):
        sid = f"BraTS-MEN-{i:05d}"
        u = rng.random()
        p_shrink, p_stable = class_probs
        cls = "shrinking" if u < p_shrink else ("stable" if u < p_shrink + p_stable else "growing")
        a = float(np.exp(rng.uniform(np.log(0.1), np.log(1.2))))
        k_ml = float(np.exp(rng.uniform(np.log(5.0), np.log(60.0))))
        if cls == "shrinking":
            v0 = k_ml * np.exp(rng.uniform(0.3, 1.0))
        elif cls == "stable":
            v0 = k_ml * np.exp(-rng.uniform(0.05, 0.3))
        else:
            v0 = k_ml * np.exp(-rng.uniform(0.5, 2.5))
        truth[sid] = {"V0_ml": float(v0), "a_per_year": a, "K_ml": k_ml, "growth_class": cls}
        static = rng.normal(size=z_dim - 1)
        if rate_latent:
            static[0] = (np.log(a) - np.log(0.35)) / 0.7
        times = np.concatenate([[0.0], np.cumsum(rng.uniform(0.5, 1.5, size=n_times - 1))])
        split = "train" if i < n_tr else ("validation" if i < n_tr + n_va else "test")
        for tp, t in enumerate(times):
            y = float(gompertz_log_volume(t, np.log(v0), a, np.log(k_ml)))
            z = np.concatenate(
                [[(y + rng.normal(0, enc_noise) - m_vol) / s_vol], static + rng.normal(0, enc_noise, size=z_dim - 1)]
            )
            rows["mu"].append(z)
            rows["subject_id"].append(sid)
            rows["timepoint"].append(tp)
            rows["time_years"].append(float(t))
            rows["factors"].append([y + rng.normal(0, seg_noise)])
            rows["split"].append(split)
    mu = torch.tensor(np.array(rows["mu"]), dtype=torch.float32)
    return {
        "mu": mu,
        "logvar": torch.full_like(mu, -6.0),
        "subject_id": rows["subject_id"],
        "timepoint": torch.tensor(rows["timepoint"]),
        "time_years": torch.tensor(rows["time_years"], dtype=torch.float32),
        "factors": torch.tensor(rows["factors"], dtype=torch.float32),
        "factor_names": ["log_volume"],
        "split": rows["split"],
        "truth": truth,
        "partition": {"vol": [0], "free": list(range(1, z_dim))},
        "vol_scale": {"mean": m_vol, "std": s_vol},
    }
