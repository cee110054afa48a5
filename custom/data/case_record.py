"""One BraTS-MEN scan found on disk: the record shared by discovery and validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from custom.constants import MODALITIES

__all__ = ["CaseRecord"]


@dataclass
class CaseRecord:
    """One scan (a subject at a timepoint) found on disk.

    Attributes:
        case_id: ``BraTS-MEN-SSSSS-TTT``.
        subject_id: ``BraTS-MEN-SSSSS``.
        timepoint: ``int(TTT)``.
        images: modality name -> path, only for the modalities present on disk.
        seg: segmentation path, or ``None`` when absent.
        folder: the folder holding the case's files.
        issues: ``(path, message)`` problems found by discovery itself (a name in the wrong letter case, the
            same file kind in two places); validation reports them with the file checks.
    """

    case_id: str
    subject_id: str
    timepoint: int
    images: dict[str, Path] = field(default_factory=dict)
    seg: Path | None = None
    folder: Path = Path(".")
    issues: list[tuple[Path, str]] = field(default_factory=list)

    def files(self) -> list[Path]:
        """All files of the case (images in :data:`MODALITIES` order, then the seg)."""
        out = [self.images[m] for m in MODALITIES if m in self.images]
        if self.seg is not None:
            out.append(self.seg)
        return out
