"""MambaSeg model, configs, and checkpoint I/O (ours, official MambaSeg, VMamba-T ImageNet)."""

from mambaseg_core.models.checkpoint import (
    PretrainedReport,
    load_model,
    load_official_checkpoint,
    load_vmamba_pretrained,
    save_checkpoint,
)
from mambaseg_core.models.config import EncoderSSMConfig, FusionSSMConfig, ModelConfig, load_model_config
from mambaseg_core.models.mambaseg import MambaSeg, MambaSegFeatures
from mambaseg_core.models.official import convert_official_state_dict, to_official_state_dict

__all__ = [
    "EncoderSSMConfig",
    "FusionSSMConfig",
    "MambaSeg",
    "MambaSegFeatures",
    "ModelConfig",
    "PretrainedReport",
    "convert_official_state_dict",
    "load_model",
    "load_model_config",
    "load_official_checkpoint",
    "load_vmamba_pretrained",
    "save_checkpoint",
    "to_official_state_dict",
]
