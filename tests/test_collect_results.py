"""tools/collect_results.py and mmmpvg.paper_results: which paper row a
config reproduces, the metafiles stating the paper's numbers, and the
collation of real (tiny) runs into the paper's tables."""
import glob
import importlib.util
import os.path as osp
import re

import numpy as np
import pytest
import yaml
from downstream import (NO_VAL, loader_options, upernet_fp32_config,
                        upernet_smoke_options)
from mmengine.config import Config
from PIL import Image

from mmmpvg.paper_results import PAPER_ROWS, TABLES, match_rows

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
with open(osp.join(REPO, 'model-index.yml')) as index:
    METAFILES = yaml.safe_load(index)['Import']
DEIT_CONFIGS = sorted(
    glob.glob(osp.join(REPO, 'configs/deit/*.py')) +
    glob.glob(osp.join(REPO, 'configs/deit/ablations/*.py')))

pytestmark = pytest.mark.usefixtures('one_thread')


def load_collect_results():
    spec = importlib.util.spec_from_file_location(
        'collect_results', osp.join(REPO, 'tools/collect_results.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sources(path, **overrides):
    cfg = Config.fromfile(path)
    if overrides:
        cfg.merge_from_dict(overrides)
    rows, why = match_rows(cfg)
    return [(r.source, r.model, r.method) for r in rows], why


def metafile_entries():
    for metafile in METAFILES:
        with open(osp.join(REPO, metafile)) as f:
            for entry in yaml.safe_load(f)['Models']:
                yield pytest.param(entry, id=entry['Name'])


@pytest.mark.parametrize('entry', metafile_entries())
def test_metafile_states_the_paper_numbers_of_its_config(entry):
    rows, why = match_rows(Config.fromfile(osp.join(REPO, entry['Config'])))
    stated = {name: value for result in entry.get('Results', [])
              for name, value in result['Metrics'].items()}
    source = entry['Metadata']['Paper Source']
    if not rows:
        assert not stated, f'{entry["Name"]} matches no paper row ({why})'
        return
    assert source == ', '.join(r.source for r in rows)
    for row in rows:
        assert stated == row.metrics
    if rows[0].params_m is not None:
        assert entry['Metadata']['Paper Parameters (M)'] == rows[0].params_m


@pytest.mark.slow
def test_every_paper_row_with_a_number_has_a_config():
    configs = glob.glob(osp.join(REPO, 'configs/*/*.py')) + glob.glob(
        osp.join(REPO, 'configs/deit/ablations/*.py'))
    matched = {id(row) for path in configs
               for row in match_rows(Config.fromfile(path))[0]}
    missing = [(r.source, r.model, r.method) for r in PAPER_ROWS
               if r.metrics and id(r) not in matched]
    assert missing == []


def test_rows_recognised_from_deit_configs():
    deit = osp.join(REPO, 'configs/deit')
    assert sources(f'{deit}/deit-small_lape_4xb256_in1k.py')[0] == [
        ('Table 1', 'DeiT-S', 'LaPE')]
    assert sources(f'{deit}/deit-tiny_mpvg_4xb256_in1k.py')[0] == [
        ('Table 1', 'DeiT-Ti', 'MPVG'),
        ('Table 5', 'DeiT-Ti', 'MPVG, Last LN pos_0'),
        ('Table 6', 'DeiT-Ti', 'MPVG')]
    assert sources(f'{deit}/ablations/'
                   'deit-tiny_mpvg-lastln-pos8_4xb256_in1k.py')[0] == [
        ('Table 5', 'DeiT-Ti', 'MPVG, Last LN pos_8')]
    assert sources(f'{deit}/ablations/'
                   'deit-tiny_default-gap-lastln-pos0_4xb256_in1k.py')[0] == [
        ('Fig. 5(b)', 'DeiT-Ti', 'Default + GAP + Last LN pos_0')]


def test_rows_follow_the_structure_not_the_method_name():
    pvg = osp.join(REPO, 'configs/deit/deit-tiny_pvg_4xb256_in1k.py')
    # PVG plus pos_0 in the Last LN is MPVG (Eq. 11).
    as_mpvg, _ = sources(pvg, model=dict(backbone=dict(
        pe_cfg=dict(method='pvg', last_norm_pos=0))))
    assert ('Table 1', 'DeiT-Ti', 'MPVG') in as_mpvg
    # Arch aliases name the same arch_zoo entry.
    assert sources(pvg, model=dict(backbone=dict(arch='deit-t')))[0] == [
        ('Table 1', 'DeiT-Ti', 'PVG')]
    # PVG with a class token is Fig. 6(a)'s analysis model: no number.
    rows, why = sources(pvg, model=dict(backbone=dict(global_pool='cls')))
    assert rows == [] and "global_pool='cls'" in why


@pytest.mark.slow
def test_adapter_configs_map_to_tables_3_and_4_and_shapes_do_not():
    labels = dict(default='Default', lape='LaPE', pvg='PVG', mpvg='MPVG')
    adapter = sorted(glob.glob(osp.join(REPO, 'configs/vit_adapter/*.py')))
    assert adapter
    for path in adapter:
        method = re.search(r'vit-adapter-ti-([a-z-]+?)_', path).group(1)
        rows, why = sources(path)
        if method.endswith('-lastln'):  # our extension: no paper number
            assert rows == [] and 'vit_last_norm=True' in why, why
            continue
        table = 'Table 3' if 'mask-rcnn' in path else 'Table 4'
        assert rows == [(table, 'ViT-Adapter-Ti', labels[method])], why
    # The CPU demos: generated shapes with classes of their own are no
    # COCO or ADE20K row.
    shapes = osp.join(REPO, 'configs/vit_adapter/shapes')
    for config, classes in (('mask-rcnn_vit-adapter-ti-mpvg_fpn_shapes.py', 3),
                            ('upernet_vit-adapter-ti-mpvg_shapes-64x64.py',
                             4)):
        rows, why = sources(f'{shapes}/{config}')
        assert rows == [] and f'its own {classes} classes' in why, why


def test_paper_rows_have_the_metrics_of_their_table():
    for row in PAPER_ROWS:
        assert row.table in TABLES
        if row.metrics:
            assert tuple(row.metrics) == TABLES[row.table][1], row


def write_imagenet_layout(root, sizes=dict(train=8, val=4)):
    """A few random images in mmpretrain's ImageNet layout (``meta/*.txt``
    lists ``file label``)."""
    rng = np.random.default_rng(0)
    (root / 'meta').mkdir(parents=True)
    for split, count in sizes.items():
        (root / split).mkdir()
        lines = []
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3),
                                         dtype=np.uint8)).save(
                                             root / split / f'{i}.png')
            lines.append(f'{i}.png {i % 4}')
        (root / 'meta' / f'{split}.txt').write_text('\n'.join(lines) + '\n')


def last_logged(work_dir, metric='accuracy/top1'):
    """``metric`` of the last validation or test in the text logs."""
    logs = [open(p).read()
            for p in sorted(glob.glob(f'{work_dir}/*/*.log'))]
    return float(re.findall(rf'{metric}: ([\d.]+)', logs[-1])[-1])


def markdown_tables(report):
    """{section title: [{column: cell}]} of the report's tables."""
    tables = {}
    for section in report.split('### ')[1:]:
        title, *lines = section.strip().splitlines()
        rows = [[c.strip() for c in line.strip('|').split('|')]
                for line in lines if line.startswith('|')]
        header, body = rows[0], rows[2:]
        tables[title.split(':')[0]] = [dict(zip(header, r)) for r in body]
    return tables


@pytest.fixture(scope='module')
def collected(tmp_path_factory, make_runner, train_tool, test_tool,
              demo_config, tiny_digits_options):
    """Real runs: the digits demo (trained, and tested on its own), and the
    paper's DeiT-Ti MPVG config on 8 generated ImageNet-layout images, one
    epoch, then resumed to a second; the ADE20K UperNet demo config on 4
    generated images for 4 iterations."""
    root = tmp_path_factory.mktemp('collect')
    digits = root / 'digits'
    make_runner(train_tool, demo_config, digits, tiny_digits_options).train()
    digits_test = root / 'digits_test'
    make_runner(test_tool, demo_config, digits_test, tiny_digits_options,
                digits / 'epoch_3.pth').test()

    data = root / 'imagenet'
    write_imagenet_layout(data)
    deit_options = [
        f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader')
        for key in (f'dataset.data_root={data}', 'batch_size=4',
                    'num_workers=0', 'persistent_workers=False')]
    deit_config = osp.join(REPO, 'configs/deit/deit-tiny_mpvg_4xb256_in1k.py')
    deit = root / 'deit'
    make_runner(train_tool, deit_config, deit,
                [*deit_options, 'train_cfg.max_epochs=1']).train()
    make_runner(train_tool, deit_config, deit,
                [*deit_options, 'train_cfg.max_epochs=2'], '--resume').train()

    # Table 4's config on generated ADE20K-format data, validated twice.
    ade = root / 'ade20k'
    smoke = [o for o in upernet_smoke_options(ade) if o not in NO_VAL]
    segmentation = root / 'upernet'
    make_runner(train_tool, upernet_fp32_config(root), segmentation, [
        *smoke, *loader_options('val_dataloader', ade, 1),
        'val_dataloader.dataset.pipeline.1.scale=(256,64)',
        'train_cfg.max_iters=4', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=4']).train()

    report = load_collect_results().collect(
        [str(root)], param_cache=str(root / 'params.json'))
    return dict(report=report, tables=markdown_tables(report),
                digits=str(digits), digits_test=str(digits_test),
                deit=str(deit), imagenet=str(data),
                segmentation=str(segmentation), ade20k=str(ade))


@pytest.mark.slow
def test_a_paper_config_run_lands_in_every_table_of_its_row(collected):
    with open(osp.join(REPO, 'configs/deit/metafile.yml')) as f:
        built = {e['Name']: e['Metadata']['Parameters']
                 for e in yaml.safe_load(f)['Models']}
    top1 = last_logged(collected['deit'])
    for table, method in (('Table 1', 'MPVG'),
                          ('Table 5', 'MPVG, Last LN pos_0'),
                          ('Table 6', 'MPVG')):
        row, = [r for r in collected['tables'][table]
                if r['Model'] == 'DeiT-Ti' and r['Method'] == method]
        assert row['run'] == collected['deit']
        assert row['#Params (M)'] == '%.3f' % (
            int(built['deit-tiny_mpvg_4xb256_in1k'] / 1000) / 1000)
        assert row['paper Top 1 Accuracy'] == '73.51'
        assert float(row['Top 1 Accuracy'].split(' /')[0]) == pytest.approx(
            top1, abs=0.005)
        assert float(row['Δ']) == pytest.approx(top1 - 73.51, abs=0.01)
        assert row['recipe'].split('; ') == [
            f'data root {collected["imagenet"]} != data/imagenet',
            'total batch 4 (1x4) != 1024', 'epochs 2/300',
            'resumed at epoch 1, iter 2']
    # Paper rows nobody ran stay in the layout.
    pvg, = [r for r in collected['tables']['Table 1']
            if r['Model'] == 'DeiT-Ti' and r['Method'] == 'PVG']
    assert pvg['run'] == 'not run' and pvg['paper Top 1 Accuracy'] == '73.17'
    assert 'Table 3' not in collected['tables']


@pytest.mark.slow
def test_runs_without_a_paper_row_are_listed_with_their_metric(
        collected, demo_config):
    unmapped = {r['run']: r for r in collected['tables']['Unmapped runs']}
    assert set(unmapped) == {collected['digits'], collected['digits_test']}

    trained = unmapped[collected['digits']]
    assert trained['config'] == 'configs/demo/mpvg_vit-micro_digits.py'
    assert trained['metrics'] == 'Top 1 Accuracy %.2f' % last_logged(
        collected['digits'])
    assert 'SklearnDigits' in trained['why']
    recipe = Config.fromfile(demo_config)  # tiny_digits_options scale it
    assert trained['recipe'].split('; ') == [
        f'batch 32 per process != {recipe.train_dataloader.batch_size}',
        f'epochs 3/{recipe.train_cfg.max_epochs}']
    from mmpretrain.registry import MODELS
    count = sum(p.numel() for p in MODELS.build(recipe.model).parameters())
    assert trained['#Params (M)'] == '%.3f' % (int(count / 1000) / 1000)

    tested = unmapped[collected['digits_test']]
    assert tested['metrics'] == 'Top 1 Accuracy %.2f (test)' % (
        last_logged(collected['digits_test']))
    assert tested['recipe'] == ''


@pytest.mark.slow
def test_cli_writes_the_report(collected, tmp_path):
    out = tmp_path / 'results.md'
    load_collect_results().main(
        [collected['deit'], '--out', str(out),
         '--param-cache', str(tmp_path / 'params.json')])
    text = out.read_text()
    assert '### Table 1' in text and 'Unmapped runs' not in text


@pytest.mark.slow
def test_a_table_4_run_on_other_data_lands_there_with_its_recipe_flagged(
        collected):
    row, = [r for r in collected['tables']['Table 4']
            if r['run'] == collected['segmentation']]
    # downstream.SEG_CONFIG is Table 4's LaPE row.
    assert row['Method'] == 'LaPE' and row['paper mIoU'] == '41.42'
    miou = last_logged(collected['segmentation'], 'mIoU')
    assert float(row['mIoU'].split(' /')[0]) == pytest.approx(miou,
                                                              abs=0.005)
    flags = row['recipe'].split('; ')
    assert flags[0].startswith(f'data root {collected["ade20k"]} != ')
    assert any(re.fullmatch(r'iterations 4/\d+', f) for f in flags), flags
