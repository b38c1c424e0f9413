"""The fast paths users reach the OpenMMLab way: ``tools/test.py --amp``
(autocast, bf16 on CPU) and MMEngine's ``compile`` option through
tools/train.py and tools/test.py; our backbones trace into one graph
(``torch.compile(fullgraph=True)``) whose eval path neither recompiles after
an optimizer step nor serves a PE chain of old weights."""
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmpretrain.registry import MODELS
from torch._dynamo.backends.registry import lookup_backend, register_backend
from torch._dynamo.testing import CompileCounterWithBackend

from downstream import DET_CONFIG

import mmmpvg.models  # noqa: F401  (registers our backbones)
from mmmpvg.engine import amp, enable_amp, enable_test_amp

pytestmark = pytest.mark.usefixtures('one_thread', 'restore_determinism')

TINY_VIT = dict(
    type='PEVisionTransformer',
    arch=dict(embed_dims=32, num_layers=3, num_heads=2,
              feedforward_channels=64),
    img_size=32, patch_size=8)
TINY_SWIN = dict(
    type='PESwinTransformer',
    arch=dict(embed_dims=16, depths=[2, 2], num_heads=[2, 2]),
    img_size=32, patch_size=4, window_size=4, out_indices=(1, ),
    drop_path_rate=0.)
BACKBONES = {
    'vit-default': dict(TINY_VIT, global_pool='cls',
                        pe_cfg=dict(method='default')),
    'vit-lape': dict(TINY_VIT, global_pool='cls', pe_cfg=dict(method='lape')),
    'vit-pvg': dict(TINY_VIT, global_pool='avg', pe_cfg=dict(method='pvg')),
    'vit-mpvg': dict(TINY_VIT, global_pool='avg', pe_cfg=dict(method='mpvg')),
    'swin-mpvg': dict(TINY_SWIN, pe_cfg=dict(method='mpvg')),
}

# Graphs of the steps MMEngine compiles, captured by a backend that then
# runs them as aot_eager (forward and backward traced as inductor's are,
# without its C++ code generation: minutes per step on this machine).
CAPTURED = []


@register_backend(name='mmmpvg_test_recording')
def recording_backend(graph_module, example_inputs):
    CAPTURED.append(graph_module)
    return lookup_backend('aot_eager')(graph_module, example_inputs)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles from scratch: dynamo's caches live per code
    object, so models of earlier tests would count towards its recompile
    limit (8) and towards the compilation counts asserted here."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def build(name, seed=0):
    """A backbone with random values in every parameter (LN shifts too), so
    that a stale or skipped PE term changes the output."""
    torch.manual_seed(seed)
    model = MODELS.build(BACKBONES[name])
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.2)
    return model


def eval_output(model, images):
    model.eval()
    with torch.no_grad():
        return model(images)[-1]


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_backbone_compiles_into_one_graph_in_train_and_eval(name):
    model = build(name)
    images = torch.randn(2, 3, 32, 32)
    counter = CompileCounterWithBackend('aot_eager')
    compiled = torch.compile(model, fullgraph=True, backend=counter)

    model.train()
    compiled(images)[-1].square().sum().backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(images)[-1].square().sum().backward()
    for param, grad in zip(model.parameters(), compiled_grads):
        torch.testing.assert_close(grad, param.grad, rtol=1e-4, atol=1e-5)

    # Eager first: it fills the PE cache that a compiled eval must not read.
    expected = eval_output(model, images)
    torch.testing.assert_close(eval_output(compiled, images), expected,
                               rtol=1e-4, atol=1e-5)
    assert counter.frame_count == 2  # train (grad) and eval (no grad)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['vit-mpvg', 'swin-mpvg'])
def test_optimizer_step_reaches_the_compiled_eval_without_recompiling(name):
    model = build(name)
    images = torch.randn(2, 3, 32, 32)
    counter = CompileCounterWithBackend('aot_eager')
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    before = eval_output(compiled, images)
    model.train()
    compiled(images)[-1].square().sum().backward()
    optimizer.step()
    frames = counter.frame_count
    after = eval_output(compiled, images)

    assert counter.frame_count == frames == 2
    torch.testing.assert_close(after, eval_output(model, images),
                               rtol=1e-4, atol=1e-5)
    assert not torch.allclose(after, before, atol=1e-2)
    # A change of a PE weight alone (the chain the eager eval caches).
    with torch.no_grad():
        model.pe.layer_norms['1'].bias.add_(1.0)
    changed = eval_output(compiled, images)
    assert counter.frame_count == frames
    torch.testing.assert_close(changed, eval_output(model, images),
                               rtol=1e-4, atol=1e-5)
    assert not torch.allclose(changed, after, atol=1e-2)


@pytest.mark.slow
def test_inductor_compiled_eval_matches_eager_after_a_weight_update():
    """The default backend once (eval only: ~25 s here; the train graph
    adds ~40 s). Inductor must read the weights as inputs, not constants."""
    model = build('vit-mpvg')
    images = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(eval_output(compiled, images),
                               eval_output(model, images),
                               rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(0.9)
    torch.testing.assert_close(eval_output(compiled, images),
                               eval_output(model, images),
                               rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------ through tools


class RecordLinearDtypes(Hook):
    """The output dtype of the model's first Linear layer in each test
    iteration."""

    def __init__(self):
        self.dtypes = []

    def before_test(self, runner):
        linear = next(m for m in runner.model.modules()
                      if isinstance(m, torch.nn.Linear))
        linear.register_forward_hook(
            lambda module, args, out: self.dtypes.append(out.dtype))


@pytest.fixture(scope='module')
def trained_checkpoint(one_thread, train_tool, make_runner, demo_config,
                       tmp_path_factory):
    """The demo trained to ~70 % top-1 (100 iterations, constant lr): an
    untrained model's near-uniform scores would make any precision agree
    or disagree by chance."""
    work_dir = tmp_path_factory.mktemp('trained')
    options = ('train_dataloader.dataset.num_samples=640',
               'train_dataloader.batch_size=32', 'train_cfg.max_epochs=5',
               'train_cfg.val_interval=5',
               'default_hooks.checkpoint.interval=5', 'param_scheduler=[]',
               'val_dataloader.dataset.num_samples=32')
    make_runner(train_tool, demo_config, work_dir, options).train()
    return work_dir / 'epoch_5.pth'


@pytest.mark.slow
def test_amp_test_infers_in_bfloat16_with_the_fp32_results(
        make_runner, test_tool, demo_config, trained_checkpoint, tmp_path):
    options = ('test_dataloader.dataset.num_samples=200',
               'test_dataloader.batch_size=50')
    runs = {}
    for name, flags in (('fp32', ()), ('amp', ('--amp', ))):
        out = tmp_path / f'{name}.pkl'
        recorder = RecordLinearDtypes()
        runner = make_runner(test_tool, demo_config, tmp_path / name, options,
                             trained_checkpoint, '--out', out, *flags)
        runner.register_hook(recorder)
        metrics = runner.test()
        with open(out, 'rb') as f:
            scores = torch.stack([p['pred_score'].float()
                                  for p in pickle.load(f)])
        runs[name] = metrics['accuracy/top1'], recorder.dtypes, scores

    (top1, dtypes, scores), (amp_top1, amp_dtypes, amp_scores) = \
        runs['fp32'], runs['amp']
    assert dtypes == [torch.float32] * 4
    assert amp_dtypes == [torch.bfloat16] * 4
    assert top1 > 50
    # Measured: same top-1, scores 0.006 apart, 1 of 200 argmaxes differs.
    assert abs(amp_top1 - top1) <= 1.5
    assert (amp_scores - scores).abs().max() < 0.03
    assert (amp_scores.argmax(1) == scores.argmax(1)).float().mean() >= 0.97


def test_amp_test_refuses_a_loop_without_an_fp16_switch(
        test_tool, demo_config):
    args = test_tool.parse_args([
        str(demo_config), 'ckpt.pth', '--amp', '--cfg-options',
        'test_cfg.type=CustomTestLoop'])
    with pytest.raises(ValueError, match="TestLoop.*'CustomTestLoop'"):
        test_tool.merge_args(Config.fromfile(args.config), args)


@pytest.mark.parametrize('native', [True, False])
def test_amp_warns_where_cpu_bfloat16_is_emulated(native, monkeypatch,
                                                  demo_config):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    # raising=False: torch < 2.3 has no such probes.
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported',
                        lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: False,
                        raising=False)
    logged = []
    monkeypatch.setattr(amp, 'print_log',
                        lambda message, **kwargs: logged.append(message))

    for enable in (enable_amp, enable_test_amp):
        enable(Config.fromfile(demo_config))

    assert len(logged) == (0 if native else 2)
    assert all('no bfloat16 instructions' in m for m in logged)


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_amp_refuses_detectors_on_cpu(tool, request, monkeypatch):
    """mmcv's CPU nms fails on bf16 boxes inside the RPN; say so up front."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    tool_module = request.getfixturevalue(f'{tool}_tool')
    argv = [DET_CONFIG, *(['ckpt.pth'] if tool == 'test' else []), '--amp']
    args = tool_module.parse_args(argv)
    with pytest.raises(ValueError, match="CPU nms has no bfloat16 kernel"):
        tool_module.merge_args(Config.fromfile(DET_CONFIG), args)


def sdpa_calls(graph_module):
    return sum(node.target is torch.nn.functional.scaled_dot_product_attention
               for node in graph_module.graph.nodes)


@pytest.mark.slow
def test_compile_option_trains_and_tests_through_the_tools(
        train_tool, test_tool, make_runner, demo_config, tiny_digits_options,
        tmp_path):
    """``--cfg-options compile=...`` compiles train_step (MMEngine) and
    val_step/test_step (CheckedRunner); results equal the eager run's."""
    options = (*tiny_digits_options, 'train_cfg.max_epochs=1',
               'param_scheduler=[]',
               'train_cfg.val_interval=1',
               'val_dataloader.dataset.num_samples=32',
               'test_dataloader.dataset.num_samples=32',
               'val_dataloader.batch_size=32',
               'test_dataloader.batch_size=32')
    compiled = ('compile.backend=mmmpvg_test_recording', )
    results = {}
    for name, extra in (('eager', ()), ('compiled', compiled)):
        CAPTURED.clear()
        trainer = make_runner(train_tool, demo_config, tmp_path / name,
                              (*options, *extra))
        trainer.train()
        train_graphs = list(CAPTURED)
        tester = make_runner(test_tool, demo_config, tmp_path / f'{name}-t',
                             (*options, *extra),
                             tmp_path / name / 'epoch_1.pth')
        metrics = tester.test()
        results[name] = (
            trainer.message_hub.get_scalar('train/loss').data[0].tolist(),
            trainer.message_hub.get_scalar('val/accuracy/top1').current(),
            metrics['accuracy/top1'], train_graphs, list(CAPTURED))

    losses, val_top1, test_top1, _, _ = results['eager']
    (compiled_losses, compiled_val_top1, compiled_test_top1, train_graphs,
     all_graphs) = results['compiled']
    num_layers = 4
    # The backbone is traced whole: all its attention calls in one graph,
    # for the train, val and test steps (three graphs).
    assert [sdpa_calls(g) for g in all_graphs
            if sdpa_calls(g)] == [num_layers] * 3
    assert [sdpa_calls(g) for g in train_graphs
            if sdpa_calls(g)] == [num_layers] * 2  # train and val
    assert len(compiled_losses) == len(losses) == 4
    assert compiled_losses == pytest.approx(losses, rel=1e-4)
    assert compiled_val_top1 == val_top1
    assert compiled_test_top1 == test_top1
