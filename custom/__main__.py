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
    """Run one command; a user error (bad data, unknown option) prints ``error: ...`` and returns 2.

    Unknown options and surplus values are refused before the command runs (:mod:`custom.cli_args`). With
    ``MENGROWTH_DEBUG=1`` the Python traceback is printed as well.
    """
    import fire

    from custom.cli_args import check_arguments
    from custom.data.errors import debug_enabled, find_user_error

    args = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    try:
        if args and args[0] in commands:
            check_arguments(args[0], commands[args[0]], args[1:])
        fire.Fire(commands, command=args, name="python -m custom")
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        user = find_user_error(err)
        if user is None and not isinstance(err, FileNotFoundError):
            raise
        if debug_enabled():
            import traceback

            traceback.print_exc()
        print(f"error: {user or err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
