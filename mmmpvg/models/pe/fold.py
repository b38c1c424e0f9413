"""Folding the PE chain into constants for export and fast inference."""
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from .chain import LayerwisePositionEmbedding


@contextmanager
def fold_pe(model: nn.Module, *example_inputs) -> Iterator[nn.Module]:
    """Within the block, every PE chain in ``model`` is a set of constant
    buffers computed for the grid of ``example_inputs``.

    The chain (resize, the ``LN'_l`` norms, Swin's PatchMerging of the PE,
    the Eq. 11 norm) does not depend on the image, so a traced or exported
    graph needs none of it: ``model(*example_inputs)`` runs once to record
    each plan, later calls return the buffers (an ONNX export stores them as
    initializers). Inputs of another patch grid raise an error inside the
    block; the model is unchanged after it.
    """
    modules = [m for m in model.modules()
               if isinstance(m, LayerwisePositionEmbedding)]
    if not modules:
        raise ValueError(f'{type(model).__name__} has no '
                         'LayerwisePositionEmbedding to fold.')
    try:
        for module in modules:
            module._fold_state = 'record'
        with torch.no_grad():
            model(*example_inputs)
        unused = [m for m in modules if m._fold_state == 'record']
        if unused:
            raise RuntimeError(f'{len(unused)} PE module(s) did not run in '
                               f'the forward pass of {type(model).__name__}.')
        yield model
    finally:
        for module in modules:
            module._unfold()
