"""Compare a MONAI Label server's answers with ``python -m monai.bundle run`` on the same case.

Usage::

    python scripts/monailabel_compare.py RECON_FROM_SERVER RECON_FROM_BUNDLE ENCODE_JSON LATENTS_JSON [--atol 1e-4]

The reconstruction must have the same shape and affine (``atol`` 1e-5 on the affine) and voxel values within
``atol``; the encoding's ``mu`` and ``logvar`` must equal the bundle's ``<case>_latents.json`` within ``atol``.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("server_nii", "bundle_nii", "encode_json", "latents_json"):
        parser.add_argument(name)
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args()
    failures = compare(args.server_nii, args.bundle_nii, args.encode_json, args.latents_json, args.atol)
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
