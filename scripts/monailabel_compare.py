"""Compare a MONAI Label server's answers with ``python -m monai.bundle run`` on the same case.

Usage::

    python scripts/monailabel_compare.py RECON_FROM_SERVER RECON_FROM_BUNDLE ENCODE_JSON LATENTS_JSON [--atol 1e-4]
    python scripts/monailabel_compare.py --forecast IMAGE_FROM_SERVER IMAGE_FROM_BUNDLE SERVER_JSON FORECAST_JSON

The reconstruction must have the same shape and affine (``atol`` 1e-5 on the affine) and voxel values within
``atol``; the encoding's ``mu`` and ``logvar`` must equal the bundle's ``<case>_latents.json`` within ``atol``.
With ``--forecast``: the decoded forecast image likewise, and the forecast's target times, ln of the forecast
volumes and their predictive sd of ln V equal those of the bundle's ``<subject>_forecast.json`` within ``atol``.
Prints one line with the maximum absolute differences; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys

import nibabel as nib
import numpy as np


def compare(server_nii: str, bundle_nii: str, encode_json: str, latents_json: str, atol: float) -> list[str]:
    """The failed checks (empty when the server's answers equal the bundle's outputs); prints the differences."""
    failures: list[str] = []
    served, ref = nib.load(server_nii), nib.load(bundle_nii)
    if served.shape != ref.shape:
        return [f"reconstruction shape {served.shape} from the server, {ref.shape} from monai.bundle run"]
    affine_diff = float(np.abs(served.affine - ref.affine).max())
    recon_diff = float(np.abs(served.get_fdata() - ref.get_fdata()).max())
    enc, lat = json.loads(open(encode_json).read()), json.loads(open(latents_json).read())
    mu_diff = float(np.abs(np.asarray(enc["mu"]) - np.asarray(lat["mu"])).max())
    logvar_diff = float(np.abs(np.asarray(enc["logvar"]) - np.asarray(lat["logvar"])).max())
    print(
        f"shape {served.shape}; max |affine diff| {affine_diff:.2e}; max |recon diff| {recon_diff:.2e}; "
        f"max |mu diff| {mu_diff:.2e}; max |logvar diff| {logvar_diff:.2e} (z {len(enc['mu'])})"
    )
    if affine_diff > 1e-5:
        failures.append(f"affine differs by {affine_diff}")
    for name, diff in (("reconstruction", recon_diff), ("mu", mu_diff), ("logvar", logvar_diff)):
        if not diff <= atol:
            failures.append(f"{name} differs by {diff} > {atol}")
    return failures


def compare_forecast(server_nii: str, bundle_nii: str, server_json: str, bundle_json: str, atol: float) -> list[str]:
    """The failed checks of a served forecast against ``monai.bundle run``'s; prints the differences."""
    served, ref = nib.load(server_nii), nib.load(bundle_nii)
    if served.shape != ref.shape:
        return [f"forecast image shape {served.shape} from the server, {ref.shape} from monai.bundle run"]
    ours, theirs = json.loads(open(server_json).read()), json.loads(open(bundle_json).read())
    diffs = {
        "affine": float(np.abs(served.affine - ref.affine).max()),
        "forecast image": float(np.abs(served.get_fdata() - ref.get_fdata()).max()),
        "target times": float(np.abs(np.subtract(ours["target_times"], theirs["target_times"])).max()),
        "forecast ln V": float(np.abs(np.log(ours["forecast_volume_ml"]) - np.log(theirs["forecast_volume_ml"])).max()),
        "forecast sd": float(np.abs(np.subtract(ours["forecast_sd_log"], theirs["forecast_sd_log"])).max()),
    }
    print(f"shape {served.shape}; " + "; ".join(f"max |{k} diff| {v:.2e}" for k, v in diffs.items()))
    limits = {"affine": 1e-5}
    return [f"{k} differs by {v} > {limits.get(k, atol)}" for k, v in diffs.items() if not v <= limits.get(k, atol)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("server_nii", "bundle_nii", "encode_json", "latents_json"):
        parser.add_argument(name)
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--forecast", action="store_true", help="compare a forecast (image, forecast JSON)")
    args = parser.parse_args()
    check = compare_forecast if args.forecast else compare
    failures = check(args.server_nii, args.bundle_nii, args.encode_json, args.latents_json, args.atol)
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
