"""Sphinx configuration for the mmmpvg documentation.

Build (warnings are errors, as the test and CI run it):

    python -m sphinx -W -b html docs/en docs/en/_build/html

Markdown pages go through myst-parser. Each ``configs/<family>/README.md`` is
copied to ``model_zoo/<family>.md`` (generated, not committed) before the
build, the way mmpretrain's docs collect their config READMEs. Links that
leave this folder are rewritten as they are read, so one markdown source
works both on a code-hosting site and here: a link to a config folder's
README becomes its model-zoo page, a link to any other file of the
repository becomes that path as inline code.
"""
import os
import os.path as osp
import re
import sys

DOCS = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(DOCS))
MODEL_ZOO = osp.join(DOCS, 'model_zoo')
sys.path.insert(0, REPO)

project = 'mmmpvg'
copyright = '2025, mmmpvg contributors'
author = 'mmmpvg contributors'
with open(osp.join(REPO, 'mmmpvg', '__init__.py')) as f:
    release = re.search(r"^__version__ = '(.+)'$", f.read(), re.M).group(1)
version = release

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
exclude_patterns = ['_build']
html_theme = 'furo'
html_title = f'mmmpvg {release}'

myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence']
myst_heading_anchors = 3

autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
# Our docstrings only: overridden torch/mmengine methods would otherwise
# inherit their library's docstrings, whose markup is not ours to fix.
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# [text](target#anchor) and ![alt](target), target without a URL scheme.
LINK = re.compile(r'(!?)\[([^\]]*)\]\(([^)\s#]*)(#[^)\s]*)?\)')


def rewrite_links(text, source_dir, doc_dir):
    """Links written relative to ``source_dir``, made valid for a page
    that Sphinx reads in ``doc_dir``."""

    def replace(match):
        bang, label, target, anchor = match.groups()
        if not target or re.match(r'[a-z][a-z0-9+.-]*:', target):
            return match.group(0)  # in-page anchor, or a URL
        path = osp.normpath(osp.join(source_dir, target))
        zoo = re.fullmatch(
            re.escape(osp.join(REPO, 'configs')) + r'/(\w+)(/README\.md)?/?',
            path)
        if zoo:
            path = osp.join(MODEL_ZOO, zoo.group(1) + '.md')
        elif not bang and not path.startswith(DOCS + os.sep):
            # A file of the repository that is no page: name it.
            code = f'`{osp.relpath(path, REPO)}`'
            return code if label.strip('`') == code.strip('`') \
                else f'{label} ({code})'
        return (f'{bang}[{label}]({osp.relpath(path, doc_dir)}'
                f'{anchor or ""})')

    return LINK.sub(replace, text)


def collect_config_readmes():
    """configs/<family>/README.md -> model_zoo/<family>.md."""
    os.makedirs(MODEL_ZOO, exist_ok=True)
    configs = osp.join(REPO, 'configs')
    for family in sorted(os.listdir(configs)):
        readme = osp.join(configs, family, 'README.md')
        if not osp.isfile(readme):
            continue
        with open(readme) as f:
            text = rewrite_links(f.read(), osp.dirname(readme), MODEL_ZOO)
        target = osp.join(MODEL_ZOO, f'{family}.md')
        if not osp.exists(target) or open(target).read() != text:
            with open(target, 'w') as f:  # unchanged files keep their mtime
                f.write(text)


def rewrite_source(app, docname, source):
    doc_dir = osp.dirname(app.env.doc2path(docname))
    source[0] = rewrite_links(source[0], doc_dir, doc_dir)


collect_config_readmes()


def setup(app):
    app.connect('source-read', rewrite_source)
