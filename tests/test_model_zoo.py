"""The model zoo's metafiles: each family's lists every config of its
folder with the parameter count that config builds, and model-index.yml
imports it. Each family's own file checks those counts against the paper's
tables, exactly."""
import os.path as osp

import pytest
import yaml
from model_zoo import (REPO, built_num_params, folder_configs,
                       metafile_models)

# DeiT (22 configs up to DeiT-B) and T2T-ViT (8) build for seconds.
FOLDERS = ['ceit', pytest.param('deit', marks=pytest.mark.slow), 'swin',
           pytest.param('t2t_vit', marks=pytest.mark.slow), 'vit_lite']


@pytest.mark.parametrize('folder', FOLDERS)
def test_metafile_lists_every_config_with_its_built_parameter_count(folder):
    with open(osp.join(REPO, 'model-index.yml')) as f:
        assert f'configs/{folder}/metafile.yml' in yaml.safe_load(f)['Import']
    listed = metafile_models(folder)
    assert sorted(listed) == folder_configs(folder)
    for path, entry in listed.items():
        assert entry['Metadata']['Parameters'] == built_num_params(path), path
