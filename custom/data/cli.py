"""``datalist`` command: discover, validate, split and write a BraTS-MEN datalist JSON.

Usage (through the package CLI, or directly)::

    python -m custom.data.cli datalist --data_dir /data/BraTS-MEN --out /data/BraTS-MEN/datalist.json \
        [--times times.csv] [--seed 0] [--split 0.7,0.15,0.15] [--skip_invalid] [--require_seg]

Invalid data raises :class:`custom.data.validation.DataValidationError` after printing every problem;
the package CLI turns that into a clean message and exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from custom.data.datalist import SPLIT_KEYS, build_datalist, write_datalist
from custom.data.errors import DataValidationError

__all__ = ["datalist", "parse_split"]


def parse_split(split: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.7,0.15,0.15"`` (or a 3-sequence, as ``fire`` parses it) -> three floats."""
    parts = [p for p in split.replace(";", ",").split(",") if p.strip()] if isinstance(split, str) else list(split)
    try:
        values = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"--split must be three comma-separated numbers, got {split!r}") from None
    if len(values) != 3:
        raise ValueError(f"--split must be three comma-separated numbers (training,validation,test), got {split!r}")
    return values  # type: ignore[return-value]


def datalist(
    data_dir: str,
    out: str,
    times: str | None = None,
    seed: int = 0,
    split: str = "0.7,0.15,0.15",
    skip_invalid: bool = False,
    require_seg: bool = False,
) -> str:
    """Build and write the datalist; print a summary. Returns the written file's path.

    Args:
        data_dir: BraTS-MEN root folder.
        out: datalist JSON to write (image paths are stored relative to its folder when under it).
        times: optional CSV ``subject_id,timepoint,time_years``.
        seed: subject-level split seed.
        split: training,validation,test fractions.
        skip_invalid: drop invalid cases and write them, with reasons, to ``<out dir>/skipped_cases.csv``.
        require_seg: a missing segmentation makes a case invalid.

    Raises:
        DataValidationError: invalid data without ``skip_invalid`` (all problems printed first).
    """
    out_path = Path(out)
    skipped_out = out_path.parent / "skipped_cases.csv"
    try:
        result = build_datalist(
            data_dir,
            times_csv=times,
            split=parse_split(split),
            seed=int(seed),
            require_seg=require_seg,
            skip_invalid=skip_invalid,
            skipped_out=skipped_out if skip_invalid else None,
        )
    except DataValidationError as err:
        print(f"datalist: invalid data under {data_dir}:\n{err}", file=sys.stderr)
        if not skip_invalid:
            print("datalist: fix the files above or rerun with --skip_invalid", file=sys.stderr)
        raise

    written = write_datalist(result, out_path)
    items = [item for key in SPLIT_KEYS for item in result[key]]
    subjects = {item["subject_id"] for item in items}
    skipped_cases = sorted({row["case_id"] for row in result.get("skipped", [])})
    lines = [
        f"datalist: {len(items)} case(s) of {len(subjects)} subject(s) from {data_dir}",
        *(
            f"  {key:<10} {len(result[key]):>5} case(s) {len({i['subject_id'] for i in result[key]}):>5} subject(s)"
            for key in SPLIT_KEYS
        ),
        f"  with segmentation: {sum('label' in i for i in items)}; with time: {sum('time_years' in i for i in items)}",
    ]
    if skipped_cases:
        lines.append(f"  skipped {len(skipped_cases)} invalid case(s) (reasons in {skipped_out}):")
        lines += [f"    {row['case_id']}: {row['path']}: {row['problem']}" for row in result["skipped"]]
    else:
        lines.append("  problems: none")
    for row in result.get("warnings", []):
        lines.append(f"  warning: {row['case_id']}: {row['path']}: {row['warning']}")
    lines.append(f"datalist: written to {written}")
    print("\n".join(lines))
    return str(written)


if __name__ == "__main__":
    import fire

    from custom.data.errors import install_excepthook

    install_excepthook()
    fire.Fire({"datalist": datalist})
