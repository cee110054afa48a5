"""Command line of the package: ``python -m custom <command> --help``.

Commands:
  synth          generate the synthetic longitudinal meningioma cohort (BraTS-MEN layout)
  datalist       discover + validate a BraTS-MEN folder and write a datalist JSON
  show           one subject across its timepoints (4 modalities, 3 planes, seg outlined) as PNG
  demo           the whole pipeline through the real bundles, ending in report.html
  traverse       latent traversal figure of a trained encoder bundle
  probes         held-out probe figure (predicted vs true log volume, centroid) from evaluate.json's latents
  export-bundle  zip a trained bundle in the MONAI model-zoo form
  bench          training-throughput benchmark (GPU table, or a quick CPU mode)
  forecast-baselines  measured-volume growth forecasts (LOCF, log-linear, Gompertz, mixed model) with intervals
"""

from __future__ import annotations

import sys


def _commands() -> dict:
    from custom import cli

    return {
        "synth": cli.synth,
        "datalist": cli.datalist,
        "show": cli.show,
        "demo": cli.demo,
        "traverse": cli.traverse,
        "probes": cli.probes,
        "export-bundle": cli.export_bundle,
        "export_bundle": cli.export_bundle,
        "bench": cli.bench,
        "forecast-baselines": cli.forecast_baselines,
        "forecast_baselines": cli.forecast_baselines,
    }


def main(argv: list[str] | None = None) -> int:
    import fire

    from custom.data.errors import UserFacingError
    from custom.data.validation import DataValidationError

    try:
        fire.Fire(_commands(), command=argv, name="python -m custom")
    except (UserFacingError, DataValidationError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
