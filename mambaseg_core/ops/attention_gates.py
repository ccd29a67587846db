"""The DDIM's attention gates, fused into Triton kernels for CUDA inference.

- `channel_gate`: sigmoid(W2 relu(W1 mean_hw x) [+ W2 relu(W1 max_hw x)]), the (B, C, 1, 1) gate of CBAM channel
  attention (with the max term) and of CTIM's squeeze-excitation (without). Three kernels: partial mean/max sums
  over slices of the pixels (enough programs to fill the GPU at 17,600 pixels of 96 channels); the first 1x1
  projection, programs of GATE_UNITS hidden units that each finish the pooling; the second projection and the
  sigmoid, programs of channel blocks. (One program per image for the last two took 15-100 µs on an H100, its
  serial loops over the partials and the weights on the critical path.) W2 relu(a) + W2 relu(b)
  is computed as W2 (relu(a) + relu(b)), the same sum in another rounding order. PyTorch takes about ten kernels,
  its spatial reductions of a channels-last map 10-20 µs each on an H100 at the model's sizes.
- `pixel_stats`: the mean and the max over the channels of every pixel, written as two planes of a caller's
  tensor (CBAM spatial attention concatenates these before its convolution): one kernel for the two reductions and
  the concatenation.
- `swapped_channel_gates`: CTIM's front: the odd channels exchanged between the modalities, each gated by the
  squeeze-excitation gate of the other, in the projections' dtype. Four kernels (the pooling of both swapped maps
  in one launch, reading each channel from the modality it comes from; the gate's two projections for both; the
  products), where PyTorch ran about twelve in series ahead of CTIM's paths.
- `spatial_attention`: CBAM spatial attention applied, x * sigmoid(conv7x7([mean_c x, max_c x])), into a caller's
  tensor if given (the DDIM writes its paths' results into the halves of the concatenation its output projection
  reads): pixel_stats, then one kernel for the convolution, the sigmoid and the product, where PyTorch ran four.
- `joint_spatial_gate`: CSIM's joint spatial gate applied to both modalities, in the dtype of the projections that
  follow: one kernel for what PyTorch runs as about ten (two pixel_stats, the two 1x1 convolutions with their ReLU
  and sigmoid, the two products and two casts), all of them in series ahead of CSIM's paths. A program reads its
  pixels' channels twice, for the statistics and for the products (the second read hits the cache).
Elsewhere (CPU, autograd, torch.compile) the `*_reference` forms run.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from mambaseg_core.ops.triton_support import kernels_apply, power_of_two_at_least, triton

# Programs of the pooling pass: about this many per image (H100: 132 SMs), none with fewer than MIN_PIXELS pixels.
POOL_PROGRAMS = 256
MIN_PIXELS = 64
# Hidden units per program of the gate's first projection; elements of the largest register tile of a program.
GATE_UNITS = 16
TILE_ELEMENTS = 4096


def channel_gate_reference(x: torch.Tensor, reduce: nn.Conv2d, expand: nn.Conv2d, with_max: bool) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 1, 1); reduce and expand are the bias-free 1x1 convolutions C -> hidden -> C (called as
    modules: the paper-style MAC count of mambaseg-info hooks them)."""

    def mlp(pooled: torch.Tensor) -> torch.Tensor:
        return expand(torch.relu(reduce(pooled)))

    logits = mlp(x.mean(dim=(2, 3), keepdim=True))
    if with_max:
        logits = logits + mlp(x.amax(dim=(2, 3), keepdim=True))
    return torch.sigmoid(logits)


def pixel_stats_reference(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out[:, 0] = mean over the channels of x (B, C, H, W), out[:, 1] = their max; returns out (B, 2, H, W)."""
    out[:, 0:1] = x.mean(dim=1, keepdim=True)
    out[:, 1:2] = x.amax(dim=1, keepdim=True)
    return out


def spatial_attention_reference(x: torch.Tensor, conv: nn.Conv2d, out: torch.Tensor | None = None) -> torch.Tensor:
    """x * sigmoid(conv([mean_c x, max_c x])) for conv the bias-free 2 -> 1 convolution, copied into out if given."""
    batch, _, height, width = x.shape
    gated = x * torch.sigmoid(conv(pixel_stats_reference(x, x.new_empty(batch, 2, height, width))))
    return gated if out is None else out.copy_(gated)


def swap_odd_channels(image: torch.Tensor, events: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exchange channels 1, 3, 5, ... between the modalities; even channels stay put."""
    odd = (torch.arange(image.shape[1], device=image.device) % 2 == 1).view(1, -1, 1, 1)
    return torch.where(odd, events, image), torch.where(odd, image, events)


def swapped_channel_gates_reference(
    image: torch.Tensor, events: torch.Tensor, reduce: nn.Conv2d, expand: nn.Conv2d, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(i * g(e), e * g(i)) in out_dtype, (i, e) = swap_odd_channels(image, events), g the squeeze-excitation gate
    channel_gate_reference(., reduce, expand, with_max=False)."""
    image, events = swap_odd_channels(image, events)
    image_gate = channel_gate_reference(events, reduce, expand, with_max=False)
    events_gate = channel_gate_reference(image, reduce, expand, with_max=False)
    return (image * image_gate).to(out_dtype), (events * events_gate).to(out_dtype)


def joint_spatial_gate_reference(
    image: torch.Tensor, events: torch.Tensor, hidden: nn.Conv2d, out: nn.Conv2d, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image * m1, events * m0) in out_dtype for m = sigmoid(out(relu(hidden([mean_c image, max_c image, mean_c
    events, max_c events])))), (B, 2, H, W): the official naming swap, map 0 gates the events (modules called as
    modules, for mambaseg-info's MAC count)."""
    batch, _, height, width = image.shape
    stats = image.new_empty(batch, 4, height, width, dtype=torch.promote_types(image.dtype, events.dtype))
    pixel_stats_reference(image, stats[:, 0:2])
    pixel_stats_reference(events, stats[:, 2:4])
    maps = torch.sigmoid(out(torch.relu(hidden(stats))))
    return (image * maps[:, 1:2]).to(out_dtype), (events * maps[:, 0:1]).to(out_dtype)


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _load_swapped(x_ptr, y_ptr, address, channels, mask, SWAPPED: tl.constexpr):
        """x at `address`, or (SWAPPED) x for the even channels and y, laid out like x, for the odd ones."""
        if SWAPPED:
            odd = (channels % 2 == 1)[None, :]
            even_values = tl.load(x_ptr + address, mask=mask & ~odd, other=0.0)
            return tl.where(odd, tl.load(y_ptr + address, mask=mask & odd, other=0.0), even_values).to(tl.float32)
        return tl.load(x_ptr + address, mask=mask, other=0.0).to(tl.float32)

    @triton.jit
    def _pool_partials_kernel(
        x_ptr, y_ptr, part_ptr, C, W, HW, PIXELS, IMAGES, x_sb, x_sc, x_sh, x_sw,
        SWAPPED: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_C channels of PIXELS consecutive pixels of one image -> their sum and max, stored at
        # part[image, slice, 0 / 1, channel] (float32). SWAPPED: images [0, IMAGES) are x with its odd channels
        # taken from y, images [IMAGES, 2 IMAGES) are y with its odd channels taken from x.
        image = tl.program_id(2).to(tl.int64)
        first, second = x_ptr, y_ptr
        if image >= IMAGES:  # only SWAPPED launches 2 IMAGES programs
            first, second = y_ptr, x_ptr
        piece = tl.program_id(1)
        channels = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        total = tl.zeros([BLOCK_C], dtype=tl.float32)
        largest = tl.full([BLOCK_C], float("-inf"), dtype=tl.float32)
        start = piece * PIXELS
        for offset in range(0, PIXELS, BLOCK_P):
            pixels = start + offset + tl.arange(0, BLOCK_P)
            mask = (pixels[:, None] < tl.minimum(start + PIXELS, HW)) & (channels[None, :] < C)
            h, w = pixels // W, pixels % W
            address = (image % IMAGES) * x_sb + channels[None, :] * x_sc + h[:, None] * x_sh + w[:, None] * x_sw
            x = _load_swapped(first, second, address, channels, mask, SWAPPED)
            total += tl.sum(x, axis=0)
            largest = tl.maximum(largest, tl.max(tl.where(mask, x, float("-inf")), axis=0))
        pieces = tl.num_programs(1)
        out = part_ptr + ((image * pieces + piece) * 2) * C + channels
        tl.store(out, total, mask=channels < C)
        tl.store(out + C, largest, mask=channels < C)

    @triton.jit
    def _gate_hidden_kernel(
        part_ptr, w1_ptr, h_ptr, C, HIDDEN, HW, PIECES,
        WITH_MAX: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_PIECES: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_H hidden units of one image. Finishes the pooling of every channel (all pieces of a
        # channel chunk in one tile), then h = relu(W1 mean) [+ relu(W1 max)] for its units, stored as float32.
        batch = tl.program_id(1).to(tl.int64)
        hidden = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
        pieces = tl.arange(0, BLOCK_PIECES)[:, None]
        from_mean = tl.zeros([BLOCK_H], dtype=tl.float32)
        from_max = tl.zeros([BLOCK_H], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            channels = c0 + tl.arange(0, BLOCK_C)
            mask = (pieces < PIECES) & (channels[None, :] < C)
            rows = part_ptr + ((batch * PIECES + pieces) * 2) * C + channels[None, :]
            mean = tl.sum(tl.load(rows, mask=mask, other=0.0), axis=0) / HW
            w1 = tl.load(
                w1_ptr + hidden[:, None] * C + channels[None, :],
                mask=(hidden[:, None] < HIDDEN) & (channels[None, :] < C), other=0.0,
            ).to(tl.float32)  # fmt: skip
            from_mean += tl.sum(w1 * mean[None, :], axis=1)
            if WITH_MAX:
                largest = tl.max(tl.load(rows + C, mask=mask, other=float("-inf")), axis=0)
                from_max += tl.sum(w1 * tl.where(channels < C, largest, 0.0)[None, :], axis=1)
        h = tl.maximum(from_mean, 0.0)
        if WITH_MAX:
            h += tl.maximum(from_max, 0.0)
        tl.store(h_ptr + batch * HIDDEN + hidden, h, mask=hidden < HIDDEN)

    @triton.jit
    def _gate_expand_kernel(h_ptr, w2_ptr, out_ptr, C, HIDDEN, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr):
        # One program: BLOCK_C channels of one image, sigmoid(W2 h) over all HIDDEN units.
        batch = tl.program_id(1).to(tl.int64)
        channels = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        hidden = tl.arange(0, BLOCK_H)
        h = tl.load(h_ptr + batch * HIDDEN + hidden, mask=hidden < HIDDEN, other=0.0)
        w2 = tl.load(
            w2_ptr + channels[:, None] * HIDDEN + hidden[None, :],
            mask=(channels[:, None] < C) & (hidden[None, :] < HIDDEN), other=0.0,
        ).to(tl.float32)  # fmt: skip
        logits = tl.sum(w2 * h[None, :], axis=1)
        gate = 1.0 / (1.0 + tl.exp(-logits))
        tl.store(out_ptr + batch * C + channels, gate.to(out_ptr.dtype.element_ty), mask=channels < C)

    @triton.jit
    def _pixel_stats_kernel(
        x_ptr, out_ptr, C, W, HW, x_sb, x_sc, x_sh, x_sw, o_sb, o_sc, o_sh, o_sw,
        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_P pixels of one image, all channels in BLOCK_C chunks -> mean and max per pixel.
        batch = tl.program_id(1).to(tl.int64)
        pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        h, w = pixels // W, pixels % W
        total = tl.zeros([BLOCK_P], dtype=tl.float32)
        largest = tl.full([BLOCK_P], float("-inf"), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            channels = c0 + tl.arange(0, BLOCK_C)
            mask = (pixels[:, None] < HW) & (channels[None, :] < C)
            address = batch * x_sb + channels[None, :] * x_sc + h[:, None] * x_sh + w[:, None] * x_sw
            x = tl.load(x_ptr + address, mask=mask, other=0.0).to(tl.float32)
            total += tl.sum(x, axis=1)
            largest = tl.maximum(largest, tl.max(tl.where(mask, x, float("-inf")), axis=1))
        out = out_ptr + batch * o_sb + h * o_sh + w * o_sw
        tl.store(out, (total / C).to(out_ptr.dtype.element_ty), mask=pixels < HW)
        tl.store(out + o_sc, largest.to(out_ptr.dtype.element_ty), mask=pixels < HW)

    @triton.jit
    def _swapped_scale_kernel(
        x_ptr, y_ptr, gate_ptr, out_ptr, C, W, HW, IMAGES, x_sb, x_sc, x_sh, x_sw,
        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_P pixels x BLOCK_C channels of one swapped image (as in _pool_partials_kernel) times
        # the gate of the other one, gate[(image + IMAGES) % (2 IMAGES), channel], stored channels-last at
        # out[image] in out's dtype.
        image = tl.program_id(2).to(tl.int64)
        first, second = x_ptr, y_ptr
        if image >= IMAGES:
            first, second = y_ptr, x_ptr
        pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask = (pixels[:, None] < HW) & (channels[None, :] < C)
        h, w = pixels // W, pixels % W
        address = (image % IMAGES) * x_sb + channels[None, :] * x_sc + h[:, None] * x_sh + w[:, None] * x_sw
        x = _load_swapped(first, second, address, channels, mask, True)
        other = (image + IMAGES) % (2 * IMAGES)
        gate = tl.load(gate_ptr + other * C + channels, mask=channels < C, other=0.0).to(tl.float32)
        y = (x * gate[None, :]).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + (image * HW + pixels[:, None]) * C + channels[None, :], y, mask=mask)

    @triton.jit
    def _spatial_attention_kernel(
        x_ptr, s_ptr, w_ptr, out_ptr, C, H, W, x_sb, x_sc, x_sh, x_sw, s_sb, s_sc, s_sh, s_sw, o_sb, o_sc, o_sh, o_sw,
        w_sc, w_sh, w_sw, KS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_P pixels of one image. The KS x KS convolution (zero padding) of the two statistics
        # planes at those pixels, unrolled over its taps; its sigmoid; then x times it over all channels.
        batch = tl.program_id(1).to(tl.int64)
        pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        inside = pixels < H * W
        h, w = pixels // W, pixels % W
        logit = tl.zeros([BLOCK_P], dtype=tl.float32)
        for plane in tl.static_range(2):
            for dy in tl.static_range(KS):
                for dx in tl.static_range(KS):
                    hh, ww = h + (dy - KS // 2), w + (dx - KS // 2)
                    ok = inside & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                    address = s_ptr + batch * s_sb + plane * s_sc + hh * s_sh + ww * s_sw
                    tap = tl.load(w_ptr + plane * w_sc + dy * w_sh + dx * w_sw).to(tl.float32)
                    logit += tap * tl.load(address, mask=ok, other=0.0).to(tl.float32)
        gate = 1.0 / (1.0 + tl.exp(-logit))
        x_at = x_ptr + batch * x_sb + h * x_sh + w * x_sw
        out_at = batch * o_sb + h * o_sh + w * o_sw
        for c0 in range(0, C, BLOCK_C):
            channels = c0 + tl.arange(0, BLOCK_C)
            mask = inside[:, None] & (channels[None, :] < C)
            x = tl.load(x_at[:, None] + channels[None, :] * x_sc, mask=mask, other=0.0).to(tl.float32)
            y = (x * gate[:, None]).to(out_ptr.dtype.element_ty)
            tl.store(out_ptr + out_at[:, None] + channels[None, :] * o_sc, y, mask=mask)

    @triton.jit
    def _channel_stats(x_at, channels_stride, inside, C, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """Mean and max over the C channels of BLOCK_P pixels (x_at: their channel-0 addresses), float32."""
        total = tl.zeros([BLOCK_P], dtype=tl.float32)
        largest = tl.full([BLOCK_P], float("-inf"), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            channels = c0 + tl.arange(0, BLOCK_C)
            mask = inside[:, None] & (channels[None, :] < C)
            x = tl.load(x_at[:, None] + channels[None, :] * channels_stride, mask=mask, other=0.0).to(tl.float32)
            total += tl.sum(x, axis=1)
            largest = tl.maximum(largest, tl.max(tl.where(mask, x, float("-inf")), axis=1))
        return total / C, largest

    @triton.jit
    def _scale_channels(x_at, channels_stride, gate, out_ptr, out_offsets, inside, C, BLOCK_C: tl.constexpr):
        """out[pixel, c] = x[pixel, c] * gate[pixel] for the C channels, stored at out_ptr + out_offsets[pixel] + c
        in out's dtype."""
        for c0 in range(0, C, BLOCK_C):
            channels = c0 + tl.arange(0, BLOCK_C)
            mask = inside[:, None] & (channels[None, :] < C)
            x = tl.load(x_at[:, None] + channels[None, :] * channels_stride, mask=mask, other=0.0).to(tl.float32)
            y = (x * gate[:, None]).to(out_ptr.dtype.element_ty)
            tl.store(out_ptr + out_offsets[:, None] + channels[None, :], y, mask=mask)

    @triton.jit
    def _joint_spatial_gate_kernel(
        img_ptr, ev_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, img_out_ptr, ev_out_ptr, C, W, HW,
        i_sb, i_sc, i_sh, i_sw, e_sb, e_sc, e_sh, e_sw,
        HIDDEN: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_P pixels of one image. Channel statistics of both modalities, the gate's two 1x1
        # projections per pixel (4 -> HIDDEN -> 2, unrolled over the hidden units), then both products.
        batch = tl.program_id(1).to(tl.int64)
        pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        inside = pixels < HW
        h, w = pixels // W, pixels % W
        img_at = img_ptr + batch * i_sb + h * i_sh + w * i_sw
        ev_at = ev_ptr + batch * e_sb + h * e_sh + w * e_sw
        img_mean, img_max = _channel_stats(img_at, i_sc, inside, C, BLOCK_C, BLOCK_P)
        ev_mean, ev_max = _channel_stats(ev_at, e_sc, inside, C, BLOCK_C, BLOCK_P)
        img_max, ev_max = tl.where(inside, img_max, 0.0), tl.where(inside, ev_max, 0.0)  # no -inf in padding
        to_events = tl.zeros([BLOCK_P], dtype=tl.float32) + tl.load(b2_ptr).to(tl.float32)
        to_image = tl.zeros([BLOCK_P], dtype=tl.float32) + tl.load(b2_ptr + 1).to(tl.float32)
        for j in tl.static_range(HIDDEN):
            unit = tl.load(b1_ptr + j).to(tl.float32) + tl.load(w1_ptr + 4 * j).to(tl.float32) * img_mean
            unit += tl.load(w1_ptr + 4 * j + 1).to(tl.float32) * img_max
            unit += tl.load(w1_ptr + 4 * j + 2).to(tl.float32) * ev_mean
            unit += tl.load(w1_ptr + 4 * j + 3).to(tl.float32) * ev_max
            unit = tl.maximum(unit, 0.0)
            to_events += tl.load(w2_ptr + j).to(tl.float32) * unit
            to_image += tl.load(w2_ptr + HIDDEN + j).to(tl.float32) * unit
        image_gate = 1.0 / (1.0 + tl.exp(-to_image))
        events_gate = 1.0 / (1.0 + tl.exp(-to_events))
        out = batch * HW * C + pixels * C
        _scale_channels(img_at, i_sc, image_gate, img_out_ptr, out, inside, C, BLOCK_C)
        _scale_channels(ev_at, e_sc, events_gate, ev_out_ptr, out, inside, C, BLOCK_C)


def _check_gate_projections(channels: int, reduce: nn.Conv2d, expand: nn.Conv2d) -> None:
    hidden = reduce.weight.shape[0]
    if (
        reduce.weight.shape != (hidden, channels, 1, 1)
        or expand.weight.shape != (channels, hidden, 1, 1)
        or reduce.bias is not None
        or expand.bias is not None
    ):
        raise ValueError(
            f"channel_gate needs bias-free 1x1 convolutions {channels} -> hidden -> {channels}: {reduce} {expand}"
        )


def _gates(
    x: torch.Tensor, y: torch.Tensor | None, reduce: nn.Conv2d, expand: nn.Conv2d, with_max: bool, dtype: torch.dtype
) -> torch.Tensor:
    """The kernels' channel gates (images, C) of x, or (y given: x and y swapped, as swapped_channel_gates) of the
    2B swapped images: pooling partials, the hidden units, the gates."""
    batch, channels, height, width = x.shape
    images = batch if y is None else 2 * batch
    pixels = height * width
    block_c = min(64, power_of_two_at_least(channels))
    channel_blocks = triton.cdiv(channels, block_c)
    pieces = max(1, min(triton.cdiv(POOL_PROGRAMS, channel_blocks), pixels // MIN_PIXELS))
    per_piece = triton.cdiv(pixels, pieces)
    pieces = triton.cdiv(pixels, per_piece)
    partials = torch.empty(images, pieces, 2, channels, dtype=torch.float32, device=x.device)
    _pool_partials_kernel[(channel_blocks, pieces, images)](
        x, x if y is None else y, partials, channels, width, pixels, per_piece, batch, *x.stride(),
        SWAPPED=y is not None, BLOCK_C=block_c, BLOCK_P=min(64, power_of_two_at_least(per_piece)), num_warps=4,
    )  # fmt: skip
    hidden = reduce.weight.shape[0]
    block_pieces = power_of_two_at_least(pieces)
    hidden_units = torch.empty(images, hidden, dtype=torch.float32, device=x.device)
    _gate_hidden_kernel[(triton.cdiv(hidden, GATE_UNITS), images)](
        partials, reduce.weight.contiguous(), hidden_units, channels, hidden, pixels, pieces, WITH_MAX=with_max,
        BLOCK_C=max(16, min(64, TILE_ELEMENTS // block_pieces)), BLOCK_H=GATE_UNITS, BLOCK_PIECES=block_pieces,
        num_warps=4,
    )  # fmt: skip
    gate = torch.empty(images, channels, dtype=dtype, device=x.device)
    block_h = power_of_two_at_least(hidden)
    block_c = max(1, min(64, TILE_ELEMENTS // block_h))
    _gate_expand_kernel[(triton.cdiv(channels, block_c), images)](
        hidden_units, expand.weight.contiguous(), gate, channels, hidden, BLOCK_C=block_c, BLOCK_H=block_h,
        num_warps=4,
    )  # fmt: skip
    return gate


def channel_gate(x: torch.Tensor, reduce: nn.Conv2d, expand: nn.Conv2d, with_max: bool) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 1, 1) in x's dtype: channel_gate_reference, by the kernels where they apply."""
    _check_gate_projections(x.shape[1], reduce, expand)
    if not kernels_apply("channel_gate", x, reduce.weight, expand.weight):
        return channel_gate_reference(x, reduce, expand, with_max)
    return _gates(x, None, reduce, expand, with_max, x.dtype)[:, :, None, None]


def spatial_attention(x: torch.Tensor, conv: nn.Conv2d, out: torch.Tensor | None = None) -> torch.Tensor:
    """spatial_attention_reference (conv: bias-free 2 -> 1, k x k, stride 1, padding k // 2), by two kernels where
    they apply; without `out` the kernels' result is channels-last in x's dtype."""
    size = conv.kernel_size[0]
    geometry = (conv.weight.shape, conv.stride, conv.padding, conv.dilation, conv.bias)
    if geometry != ((1, 2, size, size), (1, 1), (size // 2, size // 2), (1, 1), None) or size % 2 == 0:
        raise ValueError(f"spatial_attention needs a bias-free odd k x k convolution 2 -> 1 keeping the size: {conv}")
    if out is not None and out.shape != x.shape:
        raise ValueError(f"out must have x's shape {tuple(x.shape)}, got {tuple(out.shape)}")
    if not kernels_apply("spatial_attention", x, conv.weight, out):
        return spatial_attention_reference(x, conv, out)
    batch, channels, height, width = x.shape
    stats = pixel_stats(x, torch.empty(batch, 2, height, width, dtype=torch.float32, device=x.device))
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    block_p = min(64, max(16, power_of_two_at_least(triton.cdiv(height * width * batch, POOL_PROGRAMS))))
    block_c = min(power_of_two_at_least(channels), TILE_ELEMENTS // block_p, 128)
    _spatial_attention_kernel[(triton.cdiv(height * width, block_p), batch)](
        x, stats, conv.weight, out, channels, height, width, *x.stride(), *stats.stride(), *out.stride(),
        *conv.weight.stride()[1:], KS=size, BLOCK_C=block_c, BLOCK_P=block_p, num_warps=4,
    )  # fmt: skip
    return out


def swapped_channel_gates(
    image: torch.Tensor, events: torch.Tensor, reduce: nn.Conv2d, expand: nn.Conv2d, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """swapped_channel_gates_reference, by four kernels where they apply (image and events of one shape and one
    layout); the kernels' results are channels-last."""
    if image.shape != events.shape:
        raise ValueError(f"image and events must have one shape, got {tuple(image.shape)} and {tuple(events.shape)}")
    _check_gate_projections(image.shape[1], reduce, expand)
    if image.stride() != events.stride() or not kernels_apply(
        "swapped_channel_gates", image, events, reduce.weight, expand.weight
    ):
        return swapped_channel_gates_reference(image, events, reduce, expand, out_dtype)
    batch, channels, height, width = image.shape
    gates = _gates(image, events, reduce, expand, False, torch.float32)  # (2B, C): swapped image's, then events'
    out = torch.empty(
        2 * batch, channels, height, width, dtype=out_dtype, device=image.device, memory_format=torch.channels_last
    )
    block_p = min(64, power_of_two_at_least(height * width))
    block_c = min(power_of_two_at_least(channels), TILE_ELEMENTS // block_p)
    grid = (triton.cdiv(height * width, block_p), triton.cdiv(channels, block_c), 2 * batch)
    _swapped_scale_kernel[grid](
        image, events, gates, out, channels, width, height * width, batch, *image.stride(),
        BLOCK_C=block_c, BLOCK_P=block_p, num_warps=4,
    )  # fmt: skip
    return out[:batch], out[batch:]


def pixel_stats(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """pixel_stats_reference(x, out) (out: (B, 2, H, W), any strides), by the kernel where it applies."""
    if not kernels_apply("pixel_stats", x, out):
        return pixel_stats_reference(x, out)
    batch, channels, height, width = x.shape
    if out.shape != (batch, 2, height, width):
        raise ValueError(f"pixel_stats out must be ({batch}, 2, {height}, {width}), got {tuple(out.shape)}")
    # Small maps of many channels (the deep stages) take narrower pixel tiles, so that more programs share them.
    block_p = min(64, max(16, power_of_two_at_least(triton.cdiv(height * width * batch, POOL_PROGRAMS))))
    block_c = min(power_of_two_at_least(channels), TILE_ELEMENTS // block_p, 128)
    grid = (triton.cdiv(height * width, block_p), batch)
    _pixel_stats_kernel[grid](
        x, out, channels, width, height * width, *x.stride(), *out.stride(),
        BLOCK_C=block_c, BLOCK_P=block_p, num_warps=4,
    )  # fmt: skip
    return out


def joint_spatial_gate(
    image: torch.Tensor, events: torch.Tensor, hidden: nn.Conv2d, out: nn.Conv2d, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """joint_spatial_gate_reference (hidden: 1x1 4 -> units, out: 1x1 units -> 2, both with bias), by one kernel where
    it applies; the kernel's results are channels-last."""
    units = hidden.weight.shape[0]
    if hidden.weight.shape != (units, 4, 1, 1) or out.weight.shape != (2, units, 1, 1):
        raise ValueError(f"joint_spatial_gate needs 1x1 convolutions 4 -> units -> 2: {hidden} {out}")
    if image.shape != events.shape:
        raise ValueError(f"image and events must have one shape, got {tuple(image.shape)} and {tuple(events.shape)}")
    weights = (hidden.weight, hidden.bias, out.weight, out.bias)
    if any(w is None for w in weights) or not kernels_apply("joint_spatial_gate", image, events, *weights):
        return joint_spatial_gate_reference(image, events, hidden, out, out_dtype)
    batch, channels, height, width = image.shape
    pixels = height * width
    gated = [torch.empty(image.shape, dtype=out_dtype, device=image.device, memory_format=torch.channels_last)]
    gated.append(torch.empty_like(gated[0]))
    block_p = min(64, max(16, power_of_two_at_least(triton.cdiv(pixels * batch, POOL_PROGRAMS))))
    block_c = min(power_of_two_at_least(channels), TILE_ELEMENTS // block_p, 128)
    _joint_spatial_gate_kernel[(triton.cdiv(pixels, block_p), batch)](
        image, events, *(w.contiguous() for w in weights), *gated, channels, width, pixels,
        *image.stride(), *events.stride(), HIDDEN=units, BLOCK_C=block_c, BLOCK_P=block_p, num_warps=4,
    )  # fmt: skip
    return gated[0], gated[1]


__all__ = [
    "channel_gate",
    "channel_gate_reference",
    "joint_spatial_gate",
    "joint_spatial_gate_reference",
    "pixel_stats",
    "pixel_stats_reference",
    "spatial_attention",
    "spatial_attention_reference",
    "swap_odd_channels",
    "swapped_channel_gates",
    "swapped_channel_gates_reference",
]
