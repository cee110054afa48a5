"""Subject strata of the forecast report: growth class and the fastest changers; horizon bins.

Growth classes map to strata through ``STRATUM_OF_CLASS`` (the synthetic cohort writes grower / plateau /
shrinker); a class not in the map forms a stratum of its own name (listed in the report), never a silent merge.
The fastest changers are, per ``k_obs``, the ``share`` (20 %) of subjects with the largest
``|ln(V_end / V_last_obs)| / (t_end - t_last_obs)``, V_end at the subject's last target scan, using the noise-free
law volumes (``true_volume_ml``, ``last_obs_true_volume_ml``) where the truth has them for every subject, else the
measured volumes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STRATUM_OF_CLASS: dict[str, str] = {
    "grower": "growers",
    "growing": "growers",
    "plateau": "stable",
    "stable": "stable",
    "shrinker": "shrinkers",
    "shrinking": "shrinkers",
}
#: Horizon bins (years after the last observed scan): (name, low exclusive, high inclusive); "last scan" apart.
HORIZON_BINS: tuple[tuple[str, float, float], ...] = (("<=1y", -np.inf, 1.0), ("1-2y", 1.0, 2.0), (">2y", 2.0, np.inf))
FASTEST = "fastest20"


def class_stratum(growth_class: pd.Series) -> pd.Series:
    """Stratum name of each growth class (unknown classes keep their own name)."""
    return growth_class.astype(str).map(lambda c: STRATUM_OF_CLASS.get(c.lower(), c))


def change_rate(truth: pd.DataFrame) -> pd.Series:
    """Per (subject_id, k_obs): |ln(V_end / V_last_obs)| per year, true volumes when all finite, else measured."""
    last = truth.sort_values("time_years").groupby(["subject_id", "k_obs"]).tail(1).set_index(["subject_id", "k_obs"])
    use_true = (
        "true_volume_ml" in last
        and "last_obs_true_volume_ml" in last
        and np.all(np.isfinite(last["true_volume_ml"]))
        and np.all(np.isfinite(last["last_obs_true_volume_ml"]))
    )
    end, start = (
        (last["true_volume_ml"], last["last_obs_true_volume_ml"])
        if use_true
        else (last["volume_ml"], last["last_obs_volume_ml"])
    )
    dt = last["time_years"] - (last["t_last_obs"] if "t_last_obs" in last else np.nan)
    rate = np.abs(np.log(end / start)) / dt
    rate.attrs["source"] = "true" if use_true else "measured"
    return rate


def fastest_subjects(rate: pd.Series, share: float = 0.2) -> set[tuple[str, int]]:
    """(subject_id, k_obs) of the ``share`` fastest changers within each k_obs (at least one subject)."""
    out: set[tuple[str, int]] = set()
    for _, r in rate.groupby(level="k_obs"):
        n = max(1, int(round(share * len(r))))
        out |= set(r.sort_values(ascending=False).index[:n])
    return out


def horizon_bin(h: pd.Series) -> pd.Series:
    """Name of the horizon bin of each horizon (years)."""
    out = pd.Series("", index=h.index, dtype=object)
    for name, lo, hi in HORIZON_BINS:
        out[(h > lo) & (h <= hi)] = name
    return out
