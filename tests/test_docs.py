"""The documentation: docs/en builds with Sphinx with warnings as errors
(a broken link, a missing page or a bad cross-reference fails), every
config folder has a README naming each of its configs, and the model-zoo
tables in the READMEs are the ones the code computes (paper numbers from
mmmpvg.paper_results, #Params from the built models, recipes from the
configs)."""
import importlib.util
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DOCS = osp.join(REPO, 'docs', 'en')


def load_zoo_tables():
    spec = importlib.util.spec_from_file_location(
        'zoo_tables', osp.join(DOCS, 'zoo_tables.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


zoo_tables = load_zoo_tables()


@pytest.fixture(scope='module')
def zoo():
    return zoo_tables.Zoo()


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    """``sphinx-build -W``: markdown through myst-parser, the API page from
    the docstrings, the config READMEs collected into the model zoo."""
    result = subprocess.run(
        [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b',
         'html', '-d', str(tmp_path / 'doctrees'), DOCS,
         str(tmp_path / 'html')],
        cwd=REPO, capture_output=True, text=True,
        env={**os.environ, 'PYTHONPATH': REPO})
    assert result.returncode == 0, result.stdout + result.stderr
    html = tmp_path / 'html'
    for page in ('index', 'get_started', 'model_zoo', 'model_zoo/deit',
                 'model_zoo/demo', 'api', 'changelog',
                 'user_guides/pe_methods'):
        assert (html / f'{page}.html').is_file(), page
    api = (html / 'api.html').read_text()
    for name in ('PE_METHODS', 'fold_pe', 'ViTAdapter', 'match_rows'):
        assert name in api, f'{name} is missing from the API page'


@pytest.mark.parametrize('family', zoo_tables.families())
def test_config_folder_readme_names_every_config(family):
    path = osp.join(REPO, 'configs', family, 'README.md')
    assert osp.isfile(path), f'configs/{family} has no README.md'
    with open(path) as f:
        text = f.read()
    assert f'<!-- zoo-table {family} -->' in text
    missing = [rel for rel in zoo_tables.family_configs(family)
               if f'`{rel}`' not in text]
    assert missing == []
    for section in ('## Abstract', '## Citation', 'lee2025mpvg'):
        assert section in text, f'configs/{family}/README.md: {section}'


@pytest.mark.slow
@pytest.mark.parametrize('path', zoo_tables.FILES)
def test_model_zoo_tables_are_what_the_code_computes(zoo, path):
    """Regenerate with ``python docs/en/zoo_tables.py --write``."""
    old, new = zoo_tables.render(zoo, path)
    assert '<!-- zoo-table ' in old, f'{path} has no model-zoo table'
    assert old == new, f'{path}: run python docs/en/zoo_tables.py --write'


@pytest.mark.slow
def test_summary_table_cells_come_from_paper_results(zoo):
    """An independent reading of two cells of the summary: the paper's
    number as transcribed and the parameter count the tests assert."""
    table = zoo_tables.summary_table(zoo, REPO)
    deit_tiny = next(line for line in table.splitlines()
                     if line.startswith('| DeiT-Ti |'))
    assert deit_tiny.endswith('| 73.51 (5,721,640) | [deit](configs/deit) |')
    coco = next(line for line in table.splitlines() if 'COCO' in line)
    assert '| 46.5 / 41.4 (' in coco and '(box AP / mask AP)' in coco


def test_family_table_leaves_out_paper_columns_no_config_fills():
    table = zoo_tables.family_table(zoo_tables.Zoo(only=['demo']), 'demo')
    header, _, *rows = table.splitlines()
    assert len(rows) == len(zoo_tables.family_configs('demo')) == 5
    assert header == '| config | #Params (built) | recipe |'


def test_citation_file_names_the_paper():
    with open(osp.join(REPO, 'CITATION.cff')) as f:
        citation = yaml.safe_load(f)
    with open(osp.join(REPO, 'configs', 'deit', 'metafile.yml')) as f:
        paper = yaml.safe_load(f)['Collections'][0]['Paper']['Title']
    preferred = citation['preferred-citation']
    assert citation['cff-version'] == '1.2.0'
    assert paper.startswith(preferred['title'])
    assert [a['family-names'] for a in preferred['authors']] == [
        'Lee', 'Ham', 'Kim']
    with open(osp.join(REPO, 'LICENSE')) as f:
        assert 'Apache License\n                           Version 2.0' in \
            f.read()


def test_readme_links_point_at_files():
    """README.md is not part of the Sphinx build: its relative links (to the
    guides, the config folders, the figure, the license) are checked here."""
    with open(osp.join(REPO, 'README.md')) as f:
        targets = re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', f.read())
    local = [t for t in targets if not re.match(r'[a-z]+:', t)]
    assert len(local) > 10
    assert [t for t in local if not osp.exists(osp.join(REPO, t))] == []
