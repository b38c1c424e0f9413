"""The analysis on a staged backbone, Swin: each stage's tokens on the
stage's own grid and at its own width, the output tokens laid out as the
feature map. What every family shares is in test_analysis.py."""
import torch

from mmmpvg.analysis import PECapture, summarize
from pe_families import classifier, images

# The tiny Swin at 32 px: two blocks on the 8x8 patch grid at width 16,
# then patch merging, two blocks on 4x4 at width 32.
GRIDS = [(8, 8)] * 2 + [(4, 4)] * 2
DIMS = [16] * 2 + [32] * 2


def test_capture_and_summary_keep_each_stage_at_its_grid_and_width():
    backbone = classifier('swin', 'mpvg').backbone
    with torch.no_grad(), PECapture(backbone) as hooks:
        (featmap, ) = backbone(images('swin'))
        record = hooks.pop()
    assert record.grid_size == (8, 8)
    assert record.layer_grids == GRIDS
    assert [tuple(x.shape) for x in record.layer_inputs] == [
        (2, h * w, dims) for (h, w), dims in zip(GRIDS, DIMS)]
    assert [tuple(pe.shape) for pe in record.layer_pe] == [
        (1, h * w, dims) for (h, w), dims in zip(GRIDS, DIMS)]
    # Laid out on the last stage's grid, the output tokens are the featmap.
    assert featmap.shape == (2, 32, 4, 4)
    torch.testing.assert_close(
        record.patch_grid(record.output_tokens).permute(0, 3, 1, 2),
        featmap)

    summary = summarize(backbone, [record])
    assert [tuple(m.shape) for m in summary.token_ln1] == [
        (h * w, dims) for (h, w), dims in zip(GRIDS, DIMS)]
    assert summary.last_norm.pe.shape == (16, 32)
    assert summary.last_norm.gamma.shape == (32, )
