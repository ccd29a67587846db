"""Offline training and evaluation: config, trainer + hooks, DDP helpers, checkpoints, metrics.

Entry points: `mambaseg_core.cli.train` (`mambaseg-train`) and `mambaseg_core.cli.eval` (`mambaseg-eval`).
"""

from .checkpoint import atomic_torch_save, periodic_checkpoints, prune_checkpoints, resolve_resume
from .config import TrainConfig, load_train_config
from .evaluation import evaluate
from .hooks import CheckpointHook, EvalHook, HookBase, LossRecorder, ProgressBar, ScalarLogger
from .metrics import ConfusionMatrix, SegmentationMetrics, metrics_from_confusion
from .trainer import Trainer

__all__ = [
    "CheckpointHook",
    "ConfusionMatrix",
    "EvalHook",
    "HookBase",
    "LossRecorder",
    "ProgressBar",
    "ScalarLogger",
    "SegmentationMetrics",
    "TrainConfig",
    "Trainer",
    "atomic_torch_save",
    "evaluate",
    "load_train_config",
    "metrics_from_confusion",
    "periodic_checkpoints",
    "prune_checkpoints",
    "resolve_resume",
]
