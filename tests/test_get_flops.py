"""tools/analysis/get_flops.py: FLOPs per module type with the deformable
attention counted by hand, checked against plain formulas and fvcore."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from mmmpvg.adapter.ms_deform_attn import MSDeformAttn
from mmmpvg.deploy import export_module, load_model
from mmmpvg.deploy.flops import MSDA_ROW, complexity, msda_flops

pytest.importorskip('fvcore')
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


class OneAttention(nn.Module):
    """Queries at 3x3 attend over a 4x4 + 2x2 pyramid."""

    def __init__(self):
        super().__init__()
        self.attn = MSDeformAttn(embed_dims=8, num_heads=2, num_levels=2,
                                 num_points=3)
        self.shapes = [(4, 4), (2, 2)]

    def forward(self, img):
        batch = img.shape[0]
        query = img.flatten(2).transpose(1, 2)          # (B, 9, 8)
        feat = torch.zeros(batch, 20, 8) + query.mean(1, keepdim=True)
        ref = torch.rand(1, 9, 2)
        return self.attn(query, ref, feat, self.shapes)


def test_msda_count_equals_a_hand_count():
    # 2 images x 9 queries x 2 levels x 3 points = 108 samples; each reads
    # 8 channels (2 heads x 4) with 4 bilinear + 1 aggregation multiply-adds.
    assert msda_flops(2, 9, 2, 3, 8) == 108 * 8 * 5 == 4320
    result = complexity(OneAttention(), torch.randn(2, 8, 3, 3))
    assert result.msda_flops == 4320
    # fvcore sees only the bilinear part: 4 of the 5 multiply-adds.
    assert result.fvcore_grid_sample == 108 * 8 * 4
    # The linears around it: value (20 keys), offsets (2*2*3*2 = 24 outs),
    # weights (2*2*3 = 12 outs), output projection, all 8 channels in.
    linear = 2 * (20 * 8 * 8 + 9 * 8 * 24 + 9 * 8 * 12 + 9 * 8 * 8)
    assert result.flops == {'Linear': linear}
    assert result.total_flops == linear + 4320
    assert result.fvcore_flops - result.fvcore_grid_sample == linear


def test_deit_count_equals_the_formula():
    model, task = load_model(
        osp.join(REPO, 'configs/deit/deit-tiny_default_4xb256_in1k.py'))
    result = complexity(export_module(model, task), torch.randn(1, 3, 64, 64))
    tokens, dims, layers, hidden = 16 + 1, 192, 12, 768  # class token
    per_layer_linear = tokens * (4 * dims * dims + 2 * dims * hidden)
    assert result.flops['Linear'] == layers * per_layer_linear + dims * 1000
    assert result.flops['MultiheadAttention'] == layers * 2 * tokens**2 * dims
    assert result.flops['Conv2d'] == 16 * dims * 3 * 16 * 16
    assert result.total_params == sum(p.numel() for p in model.parameters())
    assert result.msda_flops == 0
    assert result.fvcore_flops == sum(result.flops.values())


@pytest.mark.parametrize('config,shape,options', [
    ('deit/deit-tiny_mpvg_4xb256_in1k.py', '32', []),
    # Swin-T's 7x7 windows need padding at 64 px (a 2x2 last stage).
    ('swin/swin-tiny_lape_4xb256_in1k.py', '64',
     ['--cfg-options', 'model.backbone.pad_small_map=True']),
    ('vit_adapter/mask-rcnn_vit-adapter-ti-pvg_fpn_4xb2-ms-3x_coco.py', '64',
     []),
    ('vit_adapter/upernet_vit-adapter-ti-default_4xb2-160k_ade20k-512x512.py',
     '64', []),
])
@pytest.mark.slow
def test_tool_runs_on_every_kind_of_config(config, shape, options):
    out = subprocess.run(
        [sys.executable, 'tools/analysis/get_flops.py',
         osp.join('configs', config), '--shape', shape, shape, *options],
        cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert '(equal)' in out and 'total' in out
    assert (MSDA_ROW in out) == ('vit_adapter' in config)
