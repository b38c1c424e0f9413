"""The shipped configs of the model zoo: the parameter count each builds
(built once per test session, for the family's count test and the
metafile test alike) and its metafile entry."""
import functools
import glob
import os.path as osp

import yaml
from mmengine.config import Config
from mmpretrain.registry import MODELS

import mmmpvg.models  # noqa: F401  (registers the backbones)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def folder_configs(folder: str) -> list:
    """The configs of ``configs/<folder>`` and its subfolders (``_base_``
    left out), as absolute paths."""
    paths = glob.glob(osp.join(REPO, 'configs', folder, '**', '*.py'),
                      recursive=True)
    return sorted(p for p in paths if '_base_' not in p.split(osp.sep))


@functools.lru_cache(maxsize=None)
def built_num_params(config: str) -> int:
    """Every parameter (frozen ones too) of the model ``config`` builds."""
    model = MODELS.build(Config.fromfile(osp.abspath(config)).model)
    return sum(p.numel() for p in model.parameters())


@functools.lru_cache(maxsize=None)
def metafile_models(folder: str) -> dict:
    """{absolute config path: entry} of ``configs/<folder>/metafile.yml``."""
    with open(osp.join(REPO, 'configs', folder, 'metafile.yml')) as f:
        entries = yaml.safe_load(f)['Models']
    return {osp.join(REPO, e['Config']): e for e in entries}


def metafile_entry(config: str) -> dict:
    """The metafile entry of ``config`` (an absolute path)."""
    folder = osp.relpath(config, osp.join(REPO, 'configs')).split(osp.sep)[0]
    return metafile_models(folder)[osp.abspath(config)]


def assert_parameter_count(config, paper, exact=None, printed=None):
    """``config`` builds ``exact`` parameters (where given); the paper's
    #Params (M) ``paper`` is the count cut off at three decimals, or, where
    the paper misprints it, ``printed`` is; the metafile states ``paper``.
    """
    count = built_num_params(config)
    if exact is not None:
        assert count == exact
    assert int(count / 1000) / 1000 == (paper if printed is None
                                        else printed), count
    assert metafile_entry(config)['Metadata']['Paper Parameters (M)'] == \
        paper
