"""MambaSeg: two VMamba-T encoders (image, events) fused by a DDIM at every stage, then a SegFormer head."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mambaseg_core.models.branches import run_branches
from mambaseg_core.models.config import ModelConfig
from mambaseg_core.models.ddim import DDIM
from mambaseg_core.models.layers import LayerNorm2d, conv1x1, projection_dtype
from mambaseg_core.models.segformer_head import SegFormerHead
from mambaseg_core.models.ssm import DirectionalSSM
from mambaseg_core.models.vmamba import VMambaEncoder
from mambaseg_core.ops.layer_norm import norm_twice
from mambaseg_core.ops.stage_residuals import stage_residuals


class MambaSegFeatures(NamedTuple):
    """Intermediates of one forward pass, per stage i (C_i channels at H_i x W_i).

    decoder_inputs[i]: F_i = decoder_proj[i](cat[f_I, f_E]), (B, C_i, H_i, W_i).
    fusion_outputs[i]: (f_I, f_E), the DDIM outputs, each (B, C_i, H_i, W_i).
    head_maps[i]: the head's projection of F_i (SegFormerHead.project), made as soon as F_i was; None where the
    head does not run folded (training, CPU).
    """

    decoder_inputs: list[torch.Tensor]
    fusion_outputs: list[tuple[torch.Tensor, torch.Tensor]]
    head_maps: list[torch.Tensor] | None = None


class ImageStage0(NamedTuple):
    """The image encoder's stage 0, which needs no events (MambaSeg.image_stage0): o = its blocks' output, a =
    out_norm(o), n = the stage-0 DDIM's image norm of a; each (B, C_0, H_0, W_0)."""

    o: torch.Tensor
    a: torch.Tensor
    n: torch.Tensor


class MambaSeg(nn.Module):
    """Image + event-voxel-grid semantic segmentation, computing what the official model computes.

    forward(image=(B, image_channels, H, W), events=(B, event_bins, H, W)) -> logits (B, classes, H, W).
    (H, W) must equal config.image_size: the TSSM weights are sized by the per-stage token counts.

    Per stage i, for each branch b in (image, events):
        o_b = stages_b[i](x_b);  a_b = out_norms_b[i](o_b);  (f_I, f_E) = fusion[i](a_I, a_E)
        F_i = decoder_proj[i](cat[f_I, f_E]);  x_b = downsamples_b[i](o_b + f_b)
    Since f = a + delta, the next stage sees o + LN(o) + delta (the official double residual).

    config.modality "image_only" / "events_only" replaces the other input by zeros before the encoders: the
    ablation variants have the fused model's architecture and parameters, and their output depends on one input.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        enc = config.encoder
        encoder_kwargs: dict[str, Any] = dict(
            d_state=enc.d_state,
            ssm_ratio=enc.ssm_ratio,
            dt_rank=enc.dt_rank,
            conv_bias=enc.conv_bias,
            mlp_ratio=enc.mlp_ratio,
            drop_path_rate=enc.drop_path_rate,
            scan_backend=config.scan_backend,
        )
        self.image_encoder = VMambaEncoder(config.image_channels, config.dims, config.depths, **encoder_kwargs)
        self.event_encoder = VMambaEncoder(config.event_bins, config.dims, config.depths, **encoder_kwargs)
        self.fusion = nn.ModuleList(
            DDIM(
                dim,
                tokens,
                d_state=config.fusion.d_state,
                ssm_ratio=config.fusion.ssm_ratio,
                conv_bias=config.fusion.conv_bias,
                channel_merge=config.ctim_merge,
                scan_backend=config.scan_backend,
            )
            for dim, tokens in zip(config.dims, config.stage_tokens)
        )
        self.decoder_proj = nn.ModuleList(nn.Conv2d(2 * dim, dim, 1) for dim in config.dims)
        self.decoder = SegFormerHead(config.dims, config.num_classes, config.decoder_dim, config.decoder_dropout)
        self.gradient_checkpointing = False

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute every VSS block and DDIM in the backward pass instead of storing their activations
        (training only; the official code never enables it, and the result is the same)."""
        self.gradient_checkpointing = enabled

    def _run(self, module: Callable[..., Any], *inputs: torch.Tensor | None) -> Any:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, *inputs, use_reentrant=False)
        return module(*inputs)

    def set_scan_backend(self, backend: str) -> None:
        """Route every selective scan through `backend` ("auto", "reference", "torch", ...)."""
        for module in self.modules():
            if isinstance(module, DirectionalSSM):
                module.backend = backend
        self.config.scan_backend = backend  # type: ignore[assignment]

    def _check_input(self, name: str, tensor: torch.Tensor) -> None:
        height, width = self.config.image_size
        channels = self.config.image_channels if name == "image" else self.config.event_bins
        if tensor.dim() != 4 or tuple(tensor.shape[1:]) != (channels, height, width):
            raise ValueError(
                f"{name} must be (B, {channels}, {height}, {width}), got {tuple(tensor.shape)}; "
                f"the model is locked to image_size {height}x{width} because its TSSM weights are sized by "
                "the token count of every stage"
            )

    def _as_seen(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """An input as config.modality sees it: the dropped one becomes zeros of its shape."""
        dropped = {"image_only": "events", "events_only": "image"}.get(self.config.modality)
        return torch.zeros_like(tensor) if name == dropped else tensor

    def compile_branch_units(self, **compile_kwargs: Any) -> None:
        """torch.compile every unit that runs inside one branch of `forward_features` (stems, VSS blocks, out-norms,
        downsamples, the modality paths of CTIM and CSIM) and the decoder, each on its own. A whole-model
        torch.compile would trace the stream switches of models/branches.py; this keeps them between the units."""
        for encoder in (self.image_encoder, self.event_encoder):
            for module in (encoder.stem, *encoder.out_norms, *encoder.downsamples):
                module.compile(**compile_kwargs)
            for block in (block for stage in encoder.stages for block in stage):
                block.forward_deferred = torch.compile(block.forward_deferred, **compile_kwargs)  # type: ignore[method-assign]
        for fusion in self.fusion:
            fusion.ctim.compile_paths(**compile_kwargs)
            fusion.csim.compile_paths(**compile_kwargs)
        self.decoder.compile(**compile_kwargs)

    def _encoder_stage(
        self, encoder: VMambaEncoder, i: int, x: torch.Tensor, fusion_norm: LayerNorm2d
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage i of one encoder: (o, a, n) = (its blocks' output, out_norm(o), fusion_norm(a)), fusion_norm being
        the DDIM's norm of this modality."""
        # Each residual sum is made by the norm that follows it (one kernel in CUDA inference): a block adds the
        # previous block's last term together with its first norm, the stage's out-norm adds the last block's and
        # normalises its result again with the DDIM's norm in the same kernel.
        pending = None
        for block in encoder.stages[i]:
            x, pending = self._run(block.forward_deferred, x, pending)
        return norm_twice(x, pending, encoder.out_norms[i].params(), fusion_norm.params())

    def image_stage0(self, image: torch.Tensor) -> ImageStage0:
        """The part of the forward that needs the image alone: its stem and stage-0 encoder. forward(image_stage0=)
        takes it made ahead, e.g. while the frame's last events are still on their way."""
        self._check_input("image", image)
        x = self.image_encoder.stem(self._as_seen("image", image))
        return ImageStage0(*self._encoder_stage(self.image_encoder, 0, x, self.fusion[0].image_norm))

    def forward_features(
        self, *, image: torch.Tensor | None, events: torch.Tensor, image_stage0: ImageStage0 | None = None
    ) -> MambaSegFeatures:
        """Run both encoders and the fusion modules; see MambaSegFeatures for the shapes. image_stage0: the image's
        stage 0 made ahead (`image_stage0`), in place of `image` (None)."""
        if image_stage0 is None:
            if image is None:
                raise ValueError("forward needs the image or its stage 0 made ahead (image_stage0)")
            self._check_input("image", image)
            image = self._as_seen("image", image)
        self._check_input("events", events)
        events = self._as_seen("events", events)
        image_encoder, event_encoder = self.image_encoder, self.event_encoder
        batch = image_stage0.o.shape[0] if image_stage0 is not None else image.shape[0]  # type: ignore[union-attr]
        if batch != events.shape[0]:
            raise ValueError(f"image and events batch sizes differ: {batch} vs {events.shape[0]}")
        # The two encoders meet only in the fusion modules: each step runs as two branches (models/branches.py).
        if image_stage0 is None:
            x_image, x_events = run_branches(
                partial(image_encoder.stem.__call__, image), partial(event_encoder.stem.__call__, events)
            )
        else:
            x_image, x_events = None, event_encoder.stem(events)
        # Nothing on the way to the next stage waits for a decoder input: F_i, and in CUDA inference the head's
        # projection of it, are made beside stage i+1's encoders (a third branch), the last ones after the loop.
        decoder_inputs: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # (F_i, its head projection or None)
        fusion_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        decoder_input: Callable[[], tuple[torch.Tensor, torch.Tensor | None]] | None = None
        for i, fusion in enumerate(self.fusion):
            event_stage = partial(self._encoder_stage, event_encoder, i, x_events, fusion.event_norm)
            previous = [decoder_input] if decoder_input is not None else []
            if x_image is None:  # stage 0, the image's made ahead
                assert image_stage0 is not None and not previous
                (o_image, a_image, n_image), (o_events, a_events, n_events) = image_stage0, event_stage()
                made = []
            else:
                image_stage = partial(self._encoder_stage, image_encoder, i, x_image, fusion.image_norm)
                (o_image, a_image, n_image), (o_events, a_events, n_events), *made = run_branches(
                    image_stage, event_stage, *previous
                )
            decoder_inputs.extend(made)
            delta_image, delta_events = self._run(fusion.forward_deferred, a_image, a_events, n_image, n_events)
            if i < len(image_encoder.downsamples):
                (f_image, x_image), (f_events, x_events) = run_branches(
                    partial(self._next_stage_input, image_encoder, i, o_image, a_image, delta_image),
                    partial(self._next_stage_input, event_encoder, i, o_events, a_events, delta_events),
                )
            else:
                f_image, f_events = a_image + delta_image, a_events + delta_events
            fusion_outputs.append((f_image, f_events))
            decoder_input = partial(self._decoder_input, i, f_image, f_events)
        assert decoder_input is not None
        decoder_inputs.append(decoder_input())
        head_maps = [head_map for _, head_map in decoder_inputs if head_map is not None]
        return MambaSegFeatures(
            [made for made, _ in decoder_inputs],
            fusion_outputs,
            head_maps if len(head_maps) == len(decoder_inputs) else None,
        )

    def _decoder_input(
        self, i: int, f_image: torch.Tensor, f_events: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(F_i = decoder_proj[i](cat[f_I, f_E]), the head's projection of it or None: SegFormerHead.project)."""
        made = conv1x1(self.decoder_proj[i], torch.cat([f_image, f_events], dim=1))
        return made, self.decoder.project(i, made)

    @staticmethod
    def _next_stage_input(
        encoder: VMambaEncoder, i: int, o: torch.Tensor, a: torch.Tensor, delta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, x) = (a + delta, downsamples[i](o + f)), within one branch; the two sums are one kernel in CUDA
        inference."""
        f, total = stage_residuals(a, delta, o, projection_dtype(o))
        return f, encoder.downsamples[i](total)

    def forward(
        self,
        *,
        image: torch.Tensor | None,
        events: torch.Tensor,
        upsample: bool = True,
        image_stage0: ImageStage0 | None = None,
    ) -> torch.Tensor:
        """Logits (B, num_classes, H, W), bilinearly upsampled from 1/4 resolution; with upsample=False the decoder's
        1/4-resolution logits (what ops/upsample_argmax turns into full-resolution class ids in one pass).
        image_stage0: the image's stage 0 made ahead (`image_stage0`), in place of the image (None)."""
        features = self.forward_features(image=image, events=events, image_stage0=image_stage0)
        if features.head_maps is not None:
            logits = self.decoder.forward_projected(features.head_maps)
        else:
            logits = self.decoder(features.decoder_inputs)
        if not upsample:
            return logits
        return F.interpolate(logits, size=tuple(events.shape[-2:]), mode="bilinear", align_corners=False)
