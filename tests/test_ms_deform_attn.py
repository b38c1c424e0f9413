"""Multi-scale deformable attention.

The pure-PyTorch path *is* mmcv's reference
``multi_scale_deformable_attn_pytorch`` (``F.grid_sample``), reused, so
comparing the two would prove nothing; both are checked here against an
independent gather-based bilinear sampler written from the definition,
forward and backward (value, sampling locations, attention weights). Also:
backend choice, fp32 under autocast, and the attention module. On a GPU
(``pytest -m cuda``, which tools/gpu_check.sh runs): mmcv's compiled kernel
against the PyTorch path, also on the inputs a real ViT-Adapter passes.
"""
import contextlib
import os.path as osp

import pytest
import torch

from mmmpvg.adapter.ms_deform_attn import (MSDeformAttn,
                                           compiled_op_available,
                                           multi_scale_deformable_attention)

# Odd, non-square and 1x1 levels.
SHAPES = [(7, 5), (3, 4), (1, 1), (6, 9)]


def bilinear_reference(value, shapes, locations, weights):
    """Deformable attention from its definition, without ``grid_sample``.

    A location (x, y) in [0, 1] is the pixel coordinate (x*w - 0.5,
    y*h - 0.5) (pixel centres at half-integers, as ``align_corners=False``);
    its 4 neighbours are weighted bilinearly, neighbours outside the map
    count as zero.
    """
    batch, _, heads, dims = value.shape
    queries, points = locations.shape[1], locations.shape[4]
    out = value.new_zeros(batch, queries, heads, dims)
    start = 0
    for level, (h, w) in enumerate(shapes):
        # (batch, heads, h*w, dims)
        v = value[:, start:start + h * w].permute(0, 2, 1, 3)
        start += h * w
        x = locations[:, :, :, level, :, 0] * w - 0.5  # (b, q, heads, p)
        y = locations[:, :, :, level, :, 1] * h - 0.5
        x0, y0 = x.floor(), y.floor()
        for xi in (x0, x0 + 1):
            for yi in (y0, y0 + 1):
                corner = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
                inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
                index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()
                index = index.permute(0, 2, 1, 3).reshape(batch, heads, -1)
                sampled = torch.gather(
                    v, 2, index[..., None].expand(-1, -1, -1, dims))
                sampled = sampled.view(batch, heads, queries, points,
                                       dims).permute(0, 2, 1, 3, 4)
                scale = weights[:, :, :, level] * corner * inside
                out = out + (scale[..., None] * sampled).sum(3)
    return out.flatten(2)


def random_inputs(seed=0, batch=2, heads=3, dims=4, queries=11, points=3,
                  shapes=SHAPES, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    keys = sum(h * w for h, w in shapes)
    value = torch.randn(batch, keys, heads, dims, generator=g, dtype=dtype)
    # Some locations fall outside the maps (zero padding).
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2,
                           generator=g, dtype=dtype) * 1.2 - 0.1
    weights = torch.rand(batch, queries, heads, len(shapes), points,
                         generator=g, dtype=dtype)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    return value, locations, weights


def grads(fn, value, locations, weights, grad_out):
    leaves = [t.clone().requires_grad_() for t in (value, locations, weights)]
    out = fn(*leaves)
    out.backward(grad_out)
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize('seed,shapes,points', [
    (0, SHAPES, 3),
    (1, [(13, 1), (1, 17)], 1),
    (2, [(5, 5)], 4),
])
def test_pure_path_matches_bilinear_definition(seed, shapes, points):
    value, locations, weights = random_inputs(seed, shapes=shapes,
                                              points=points)
    grad_out = torch.randn(value.shape[0], locations.shape[1],
                           value.shape[2] * value.shape[3])
    out, (g_value, g_loc, g_weight) = grads(
        lambda v, loc, w: multi_scale_deformable_attention(
            v, shapes, loc, w, backend='pytorch'), value, locations, weights,
        grad_out)
    ref, (r_value, r_loc, r_weight) = grads(
        lambda v, loc, w: bilinear_reference(v, shapes, loc, w), value,
        locations, weights, grad_out)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_value, r_value, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_weight, r_weight, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_loc, r_loc, atol=1e-4, rtol=1e-4)
    assert g_loc.abs().sum() > 0


def test_backend_choice_on_cpu():
    value, locations, weights = random_inputs(4)
    auto = multi_scale_deformable_attention(value, SHAPES, locations,
                                            weights, backend='auto')
    pure = multi_scale_deformable_attention(value, SHAPES, locations,
                                            weights, backend='pytorch')
    torch.testing.assert_close(auto, pure, atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="backend='compiled' needs CUDA"):
        multi_scale_deformable_attention(value, SHAPES, locations, weights,
                                         backend='compiled')
    with pytest.raises(ValueError, match='Unknown deformable-attention'):
        multi_scale_deformable_attention(value, SHAPES, locations, weights,
                                         backend='cuda')


def test_fp32_under_autocast():
    value, locations, weights = random_inputs(5)
    value16 = value.bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = multi_scale_deformable_attention(value16, SHAPES,
                                               locations.bfloat16(),
                                               weights.bfloat16())
    assert out.dtype == torch.float32
    expected = bilinear_reference(value16.float(), SHAPES,
                                  locations.bfloat16().float(),
                                  weights.bfloat16().float())
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


needs_compiled_op = pytest.mark.skipif(
    not compiled_op_available(torch.device('cuda')),
    reason="mmcv's compiled deformable-attention kernel is CUDA-only; no "
    'GPU (or no CUDA build of mmcv) here')


@pytest.mark.cuda
@needs_compiled_op
def test_compiled_op_matches_pure_path_on_cuda():
    value, locations, weights = random_inputs(6, batch=3)
    grad_out = torch.randn(3, locations.shape[1], 12)
    cuda = [t.cuda() for t in (value, locations, weights, grad_out)]
    out_c, grads_c = grads(
        lambda v, loc, w: multi_scale_deformable_attention(
            v, SHAPES, loc, w, backend='compiled'), *cuda)
    out_p, grads_p = grads(
        lambda v, loc, w: multi_scale_deformable_attention(
            v, SHAPES, loc, w, backend='pytorch'), *cuda)
    torch.testing.assert_close(out_c, out_p, atol=1e-5, rtol=1e-5)
    for gc, gp in zip(grads_c, grads_p):
        torch.testing.assert_close(gc, gp, atol=1e-4, rtol=1e-4)


def test_compiled_kernel_gets_contiguous_inputs(monkeypatch):
    """mmcv's CUDA kernel asserts contiguous inputs and indexes raw memory:
    what the module hands it, even from a transposed feature view, must be
    contiguous. Checked on CPU by standing in for the kernel."""
    import mmmpvg.adapter.ms_deform_attn as msda
    seen = []

    class RecordingKernel:
        @staticmethod
        def apply(value, shapes, level_start_index, locations, weights,
                  im2col_step):
            seen.append([t.is_contiguous() for t in
                         (value, shapes, level_start_index, locations,
                          weights)])
            return msda.multi_scale_deformable_attn_pytorch(
                value, [tuple(s) for s in shapes.tolist()], locations,
                weights)

    monkeypatch.setattr(msda, 'select_backend', lambda *args: 'compiled')
    monkeypatch.setattr(msda, 'MultiScaleDeformableAttnFunction',
                        RecordingKernel)
    attn = MSDeformAttn(embed_dims=12, num_levels=len(SHAPES), num_heads=3,
                        num_points=2)
    attn.init_weights()
    num_tokens = sum(h * w for h, w in SHAPES)
    feat = torch.randn(2, 12, num_tokens).transpose(1, 2)
    query = torch.randn(2, 12, 5).transpose(1, 2)
    attn(query, torch.rand(1, 5, 2), feat, SHAPES)
    assert seen == [[True] * 5]


def test_module_with_zero_offsets_reads_the_reference_pixel():
    """Offsets 0: every point samples the query's own pixel centre, so the
    output is ``output_proj(value_proj(feat))`` at that pixel."""
    torch.manual_seed(0)
    attn = MSDeformAttn(embed_dims=12, num_levels=1, num_heads=3,
                        num_points=4, value_ratio=0.5)
    attn.init_weights()
    torch.nn.init.zeros_(attn.sampling_offsets.bias)
    torch.nn.init.normal_(attn.attention_weights.weight)  # any weights
    h, w = 5, 7
    feat = torch.randn(2, h * w, 12)
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h,
                            (torch.arange(w) + 0.5) / w, indexing='ij')
    ref = torch.stack([xs.flatten(), ys.flatten()], -1)[None]
    query = torch.randn(2, h * w, 12)
    out = attn(query, ref, feat, [(h, w)])
    expected = attn.output_proj(attn.value_proj(feat))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_module_init_spreads_points_per_head():
    """Deformable DETR init: head k's points lie on one ray, 1..P pixels
    (in the max-norm) from the reference, in a direction of its own."""
    attn = MSDeformAttn(embed_dims=24, num_levels=2, num_heads=6,
                        num_points=3)
    attn.init_weights()
    bias = attn.sampling_offsets.bias.view(6, 2, 3, 2)
    steps = bias.abs().amax(-1)
    torch.testing.assert_close(steps, torch.tensor(
        [1., 2., 3.]).expand(6, 2, 3))
    directions = bias[:, 0, 0]
    assert len({tuple(d.tolist()) for d in directions.round(decimals=4)}) == 6
    assert attn.attention_weights.weight.abs().sum() == 0


def test_module_rejects_wrong_level_count():
    attn = MSDeformAttn(embed_dims=12, num_levels=3, num_heads=3,
                        num_points=2)
    with pytest.raises(ValueError, match='3-level attention got 1 levels'):
        attn(torch.randn(1, 4, 12), torch.rand(1, 4, 2),
             torch.randn(1, 4, 12), [(2, 2)])
    with pytest.raises(ValueError, match='not divisible'):
        MSDeformAttn(embed_dims=12, num_levels=1, num_heads=5, num_points=2)


ADE20K_CONFIG = osp.join(
    osp.dirname(__file__), '..', 'configs', 'vit_adapter',
    'upernet_vit-adapter-ti-mpvg_4xb2-160k_ade20k-512x512.py')


def adapter_msda_calls(monkeypatch, device, img_size, batch=1,
                       dtype=torch.float32):
    """The (value, shapes, locations, weights) of every deformable-attention
    call in one forward of the ADE20K config's ViT-Adapter-Ti (under
    autocast to ``dtype``). Its sampling offsets are the Deformable DETR
    init (rays of 1-4 px) made query-dependent by a small random weight, as
    training does: the init alone puts points exactly on pixel centres,
    where the location gradient is discontinuous."""
    import mmmpvg.adapter.ms_deform_attn as msda
    from mmdet.registry import MODELS
    from mmengine.config import Config

    cfg = Config.fromfile(ADE20K_CONFIG).model.backbone
    cfg.update(norm_cfg=dict(type='BN'), init_cfg=None)
    torch.manual_seed(0)
    adapter = MODELS.build(cfg)
    adapter.init_weights()
    for module in adapter.modules():
        if isinstance(module, MSDeformAttn):
            torch.nn.init.normal_(module.sampling_offsets.weight, std=0.01)
            torch.nn.init.normal_(module.attention_weights.weight, std=0.01)
    adapter.to(device).eval()
    calls = []

    def record(value, shapes, locations, weights, *args):
        calls.append((value.detach(), list(shapes), locations.detach(),
                      weights.detach()))
        return original(value, shapes, locations, weights, 'pytorch')

    original = msda.multi_scale_deformable_attention
    monkeypatch.setattr(msda, 'multi_scale_deformable_attention', record)
    images = torch.randn(batch, 3, img_size, img_size, device=device)
    # No autocast context at fp32: torch 2.1 refuses a CPU autocast dtype
    # other than bf16 even when disabled.
    amp = (contextlib.nullcontext() if dtype == torch.float32 else
           torch.autocast(device.type, dtype=dtype))
    with torch.no_grad(), amp:
        adapter(images)
    return calls


def test_adapter_calls_deformable_attention_at_its_real_shapes(monkeypatch):
    """What the GPU test below compares: 4 injectors (1/16 queries over the
    1/8, 1/16, 1/32 maps), 4 extractors and the 2 extra ones (the 1/8..1/32
    tokens over the 1/16 map), 6 heads of 32 dims, 4 points."""
    with torch.random.fork_rng():
        calls = adapter_msda_calls(monkeypatch, torch.device('cpu'), 128)
    injector = [(16, 16), (8, 8), (4, 4)]
    kinds = [shapes for _, shapes, _, _ in calls]
    assert kinds == [injector, [(8, 8)]] * 4 + [[(8, 8)]] * 2
    value, _, locations, weights = calls[0]
    assert value.shape == (1, 16 * 16 + 8 * 8 + 4 * 4, 6, 32)
    assert locations.shape == (1, 8 * 8, 6, 3, 4, 2)
    assert weights.shape == (1, 8 * 8, 6, 3, 4)
    value, _, locations, _ = calls[1]
    assert value.shape == (1, 8 * 8, 6, 32)
    assert locations.shape == (1, 16 * 16 + 8 * 8 + 4 * 4, 6, 1, 4, 2)
    # Off the pixel centres (see adapter_msda_calls).
    x = locations[0, :, :, 0, :, 0] * 16 - 0.5
    assert (x - x.round()).abs().min() > 0


@pytest.mark.cuda
@needs_compiled_op
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_compiled_op_matches_pure_path_in_the_adapter(monkeypatch, dtype):
    """Each call of a 512 px, batch 2 ViT-Adapter-Ti forward (in fp32 and
    under fp16 autocast, as the UperNet recipe trains), through both
    backends under the same autocast: output and the gradients of value,
    locations and weights."""
    cuda = torch.device('cuda')
    calls = adapter_msda_calls(monkeypatch, cuda, 512, batch=2, dtype=dtype)
    assert len(calls) == 10
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(
        atol=2e-3, rtol=2e-3)
    generator = torch.Generator(cuda).manual_seed(0)
    for value, shapes, locations, weights in calls:
        grad_out = torch.randn(value.shape[0], locations.shape[1],
                               value.shape[2] * value.shape[3],
                               device=cuda, generator=generator)
        results = {}
        for backend in ('compiled', 'pytorch'):
            with torch.autocast('cuda', dtype=dtype,
                                enabled=dtype != torch.float32):
                results[backend] = grads(
                    lambda v, loc, w: multi_scale_deformable_attention(
                        v, shapes, loc, w, backend=backend), value, locations,
                    weights, grad_out)
        (out_c, grads_c), (out_p, grads_p) = results.values()
        assert out_c.dtype == torch.float32
        torch.testing.assert_close(out_c, out_p, atol=1e-5, rtol=1e-5)
        for name, gc, gp in zip(('value', 'locations', 'weights'), grads_c,
                                grads_p):
            torch.testing.assert_close(gc, gp, **tol, msg=lambda m: (
                f'{name} gradient, levels {shapes}: {m}'))
