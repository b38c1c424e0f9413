"""timm DeiT weights through the converter give timm's logits."""
import glob
import os.path as osp
import runpy
import subprocess
import sys

import pytest
import timm
import torch
from mmpretrain.registry import MODELS
from timm.models.vision_transformer import VisionTransformer

import mmmpvg.models  # noqa: F401
from mmmpvg.models.converters import convert_deit_state_dict

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONVERTER_SCRIPTS = sorted(
    glob.glob(osp.join(REPO, 'tools', 'model_converters', '*_to_mmmpvg.py')))


def deit_tiny_classifier(global_pool, method='default',
                         head='VisionTransformerClsHead'):
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='PEVisionTransformer', arch='deit-tiny',
                      global_pool=global_pool, pe_cfg=dict(method=method)),
        head=dict(type=head, num_classes=1000, in_channels=192)))


def randomised(model):
    """timm zero-initialises biases and LN shifts: randomise everything so
    a swapped or dropped tensor cannot go unnoticed."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.eval()


def load_converted(model, state_dict):
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    assert not unexpected, unexpected
    return missing


def timm_gap_deit_tiny():
    return VisionTransformer(embed_dim=192, depth=12, num_heads=3,
                             class_token=False, global_pool='avg',
                             fc_norm=False)


# timm's DeiT-Ti (class token), and its GAP variant without fc_norm.
TIMM_DEFAULTS = {
    'cls': (lambda: timm.create_model('deit_tiny_patch16_224'),
            dict(), 'VisionTransformerClsHead'),
    'avg': (timm_gap_deit_tiny, dict(head_key='head.fc'), 'LinearClsHead'),
}


@pytest.mark.parametrize('pool', sorted(TIMM_DEFAULTS))
def test_default_matches_timm_deit_tiny(pool):
    make_timm, convert_args, head = TIMM_DEFAULTS[pool]
    reference = randomised(make_timm())
    converted, notes = convert_deit_state_dict(
        reference.state_dict(), dict(method='default'), pool, **convert_args)
    assert notes == []
    model = deit_tiny_classifier(pool, head=head).eval()
    assert load_converted(model, converted) == []
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(
            model(images, mode='tensor'), reference(images),
            rtol=1e-4, atol=1e-4)


def test_class_token_checkpoint_into_gap_model_drops_the_class_row():
    source = timm.create_model('deit_tiny_patch16_224').state_dict()
    converted, notes = convert_deit_state_dict(
        source, dict(method='mpvg'), 'avg')
    assert 'backbone.cls_token' not in converted
    torch.testing.assert_close(converted['backbone.pos_embed'],
                               source['pos_embed'][:, 1:])
    assert any('dropped cls_token' in n for n in notes)
    assert any('pos_embed: dropped 1' in n for n in notes)
    assert any('layers 1..11 are new' in n
               for n in notes)
    missing = load_converted(deit_tiny_classifier('avg', 'mpvg'), converted)
    assert all(k.startswith(('backbone.pe.layer_norms',
                             'backbone.pe.last_pos_norm')) for k in missing)


def lape_checkpoint():
    """A state dict in the official LaPE layout (timm names + pe_norm)."""
    state = timm.create_model('deit_tiny_patch16_224').state_dict()
    for layer in range(12):
        state[f'blocks.{layer}.pe_norm.weight'] = torch.rand(192)
        state[f'blocks.{layer}.pe_norm.bias'] = torch.rand(192)
    return state


def test_lape_checkpoint_keeps_all_pe_norms_for_lape():
    converted, notes = convert_deit_state_dict(
        lape_checkpoint(), dict(method='lape'), 'cls')
    assert notes == []
    model = deit_tiny_classifier('cls', 'lape')
    assert load_converted(model, converted) == []


@pytest.mark.slow
def test_lape_checkpoint_into_pvg_drops_layer0_pe_norm(tmp_path):
    source = lape_checkpoint()
    src = tmp_path / 'lape.pth'
    torch.save({'model': source}, src)
    dst = tmp_path / 'pvg.pth'
    result = subprocess.run(
        [sys.executable, 'tools/model_converters/deit_to_mmmpvg.py',
         str(src), str(dst), '--pe-method', 'pvg', '--global-pool', 'avg'],
        cwd=REPO, capture_output=True, text=True, check=True)
    assert 'dropped backbone.pe.layer_norms.0.weight' in result.stdout
    converted = torch.load(dst, weights_only=True)['state_dict']
    assert 'backbone.pe.layer_norms.0.weight' not in converted
    torch.testing.assert_close(converted['backbone.pe.layer_norms.5.bias'],
                               source['blocks.5.pe_norm.bias'])
    assert load_converted(deit_tiny_classifier('avg', 'pvg'), converted) == []


def test_gap_checkpoint_cannot_feed_a_class_token_model():
    source = timm_gap_deit_tiny()
    with pytest.raises(ValueError, match='no class token'):
        convert_deit_state_dict(source.state_dict(), None, 'cls')


@pytest.mark.slow
@pytest.mark.parametrize('script', CONVERTER_SCRIPTS, ids=osp.basename)
def test_converter_scripts_refuse_bad_input_in_one_line(script, tmp_path,
                                                        monkeypatch, capsys):
    """Every converter script: a file that is not a checkpoint is one
    ``error:`` line and no output file; the PE methods are the registered
    ones."""
    assert len(CONVERTER_SCRIPTS) == 5
    src, dst = tmp_path / 'weights.pth', tmp_path / 'converted.pth'
    src.write_text('not a checkpoint')
    monkeypatch.setattr(sys, 'argv', [script, str(src), str(dst)])
    with pytest.raises(SystemExit,
                       match='^error: .*weights.pth is not a PyTorch '
                       'checkpoint'):
        runpy.run_path(script, run_name='__main__')
    assert not dst.exists()
    monkeypatch.setattr(sys, 'argv',
                        [script, str(src), str(dst), '--pe-method', 'gap'])
    with pytest.raises(SystemExit):
        runpy.run_path(script, run_name='__main__')
    assert "choose from 'default', 'lape', 'mpvg', 'pvg'" in \
        capsys.readouterr().err
