"""Ignite handlers used by the bundle configs (one idea per module)."""

from custom.engines.handlers.checkpoints import RNGState, TrainingCheckpoints
from custom.engines.handlers.diagnostics import ValidationDiagnostics
from custom.engines.handlers.epoch_stats import EpochAverager
from custom.engines.handlers.figures import DashboardWriter, EvaluationFigures, ReconstructionFigures
from custom.engines.handlers.latents import LatentWriter
from custom.engines.handlers.model_config import ModelConfigWriter
from custom.engines.handlers.nan_guard import NonFiniteGuard, NonFiniteTrainingError
from custom.engines.handlers.profiler import StepProfiler
from custom.engines.handlers.resume import ResumeHandler
from custom.engines.handlers.schedules import ScheduleHandler
from custom.engines.handlers.tidy_csv import TidyCSVWriter

__all__ = [
    "DashboardWriter",
    "EpochAverager",
    "LatentWriter",
    "ModelConfigWriter",
    "NonFiniteGuard",
    "NonFiniteTrainingError",
    "RNGState",
    "EvaluationFigures",
    "ReconstructionFigures",
    "ResumeHandler",
    "ScheduleHandler",
    "StepProfiler",
    "TidyCSVWriter",
    "TrainingCheckpoints",
    "ValidationDiagnostics",
]
