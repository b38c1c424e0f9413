"""The PE abstraction itself: pos_0 sources and staged-model validation."""
import numpy as np
import pytest
import torch

from mmmpvg.models import LayerwisePositionEmbedding


def t2t_sinusoid_table(n_position, d_hid):
    """T2T-ViT's get_sinusoid_encoding, written out in numpy."""
    table = np.array([[pos / np.power(10000, 2 * (j // 2) / d_hid)
                       for j in range(d_hid)] for pos in range(n_position)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.from_numpy(table).float()[None]


def test_sinusoidal_source_is_a_frozen_parameter_with_t2t_values():
    pe = LayerwisePositionEmbedding((4, 4), 12, 3, num_extra_tokens=1,
                                    pe_cfg=dict(method='pvg'),
                                    pos_source='sinusoidal')
    assert not pe.pos_embed.requires_grad
    # Counted in #Params, as T2T-ViT's own count does.
    assert pe.pos_embed in list(pe.parameters())
    torch.testing.assert_close(pe.pos_embed.data, t2t_sinusoid_table(17, 12))


def test_external_source_needs_the_backbone_pe():
    pe = LayerwisePositionEmbedding((2, 2), 8, 2, pe_cfg=dict(method='pvg'),
                                    pos_source='external')
    assert pe.pos_embed is None
    pos = torch.randn(1, 4, 8)
    plan = pe((2, 2), pos)
    torch.testing.assert_close(plan.to_input, pos)
    with pytest.raises(ValueError, match='external'):
        pe((2, 2))
    learnable = LayerwisePositionEmbedding((2, 2), 8, 2)
    with pytest.raises(ValueError, match='learnable'):
        learnable((2, 2), pos)


@pytest.mark.parametrize('kwargs,message', [
    (dict(stage_depths=(1, 2), stage_dims=(8, 16)), 'do not describe'),
    (dict(stage_depths=(2, 2), stage_dims=(16, 32)), 'do not describe'),
    (dict(stage_depths=(2, 2), stage_dims=(8, )), 'do not describe'),
    (dict(pos_source='fourier'), 'Unknown pos_source'),
])
def test_inconsistent_stages_and_sources_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LayerwisePositionEmbedding((2, 2), 8, 4, **kwargs)


def test_staged_plan_needs_one_downsample_per_boundary():
    pe = LayerwisePositionEmbedding((2, 2), 8, 4, pe_cfg=dict(method='pvg'),
                                    stage_depths=(2, 2), stage_dims=(8, 16))
    assert pe.layer_dims == [8, 8, 16, 16]
    with pytest.raises(ValueError, match='need 1 downsample'):
        pe((2, 2))
