"""The PE package's parts: pos_0 sources and the staged LN chain."""
import numpy as np
import pytest
import torch

from mmmpvg.models.pe import (LayerwisePositionEmbedding, build_pos_embed,
                              resolve_pe_cfg)


def t2t_sinusoid_table(n_position, d_hid):
    """T2T-ViT's get_sinusoid_encoding, written out in numpy (float64,
    cast to float32 once)."""
    table = np.array([[pos / np.power(10000, 2 * (j // 2) / d_hid)
                       for j in range(d_hid)] for pos in range(n_position)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.from_numpy(table).float()[None]


def test_sinusoidal_source_is_a_frozen_parameter_with_t2t_values():
    pos = build_pos_embed('sinusoidal', 197, 256)
    assert isinstance(pos, torch.nn.Parameter) and not pos.requires_grad
    # Bit for bit: a float32 exponent differs by up to 6.9e-6 here.
    assert torch.equal(pos.data, t2t_sinusoid_table(197, 256))


def test_learnable_source_and_unknown_sources():
    pos = build_pos_embed('learnable', 5, 8)
    assert pos.requires_grad and pos.shape == (1, 5, 8)
    with pytest.raises(ValueError, match='Unknown pos_source'):
        build_pos_embed('fourier', 5, 8)


@pytest.mark.parametrize('kwargs,message', [
    (dict(stage_depths=(1, 2), stage_dims=(8, )), 'describe no layers'),
    (dict(stage_depths=(), stage_dims=()), 'describe no layers'),
])
def test_inconsistent_stages_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LayerwisePositionEmbedding((2, 2), 0, **kwargs)


def test_staged_plan_needs_one_downsample_per_boundary():
    pe = LayerwisePositionEmbedding((2, 2), 0, stage_depths=(2, 2),
                                    stage_dims=(8, 16),
                                    pe_cfg=dict(method='pvg'))
    assert pe.layer_dims == [8, 8, 16, 16]
    with pytest.raises(ValueError, match='need 1 downsample'):
        pe((2, 2), torch.zeros(1, 4, 8))


@pytest.mark.parametrize('pe_cfg,kwargs,message', [
    (dict(method='nope'), {}, 'Unknown PE method'),
    (dict(method='mpvg'), dict(with_cls_token=True), 'class token'),
    (dict(method='pvg', colour=1), {}, 'Unknown PE knob'),
    (dict(method='default', hierarchical=False), {}, 'layerwise=True'),
    (dict(method='default', add_to_input=False), {}, 'unused'),
    (dict(method='mpvg', last_norm_pos=7), dict(num_layers=4),
     'last_norm_pos=7'),
    (dict(method='default', last_norm_pos=2), dict(num_layers=4),
     'last_norm_pos=2'),
])
def test_meaningless_pe_configs_are_refused(pe_cfg, kwargs, message):
    with pytest.raises(ValueError, match=message):
        resolve_pe_cfg(pe_cfg, **kwargs)


def test_a_family_preset_override_changes_only_its_method():
    swin = dict(pvg=dict(include_layer0=True))
    assert resolve_pe_cfg(dict(method='pvg'), swin)['include_layer0']
    assert not resolve_pe_cfg(dict(method='pvg'))['include_layer0']
    assert resolve_pe_cfg(dict(method='lape'), swin) == \
        resolve_pe_cfg(dict(method='lape'))
