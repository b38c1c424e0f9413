"""The analysis on CeiT, whose Last LN normalises the one token the LCA
makes, not the token map: only the per-layer maps (Fig. 4) are recorded.
What every family shares, the tools' refusal of CeiT's Last LN included, is
in test_analysis.py."""
import pytest
import torch

from mmmpvg.analysis import PECapture, summarize
from pe_families import classifier, images


def test_capture_and_summary_have_no_last_norm():
    backbone = classifier('ceit', 'mpvg').backbone
    with torch.no_grad(), PECapture(backbone) as hooks:
        backbone(images('ceit'))
        record = hooks.pop()
    assert record.last_norm_input is None
    assert record.last_norm_output is None and record.output_tokens is None
    assert record.plan.to_last_norm is not None  # added after the LCA
    summary = summarize(backbone, [record])
    assert summary.last_norm is None
    with pytest.raises(ValueError, match='LCA token'):
        summary.require_last_norm()
