"""Capture and statistics behind tools/analysis/ (the paper's Fig. 2-8)."""
from .capture import ForwardRecord, PECapture, find_pe_backbone, pool_tokens
from .statistics import (LastNormSummary, PESummary, cosine, pearson,
                         summarize, token_norms)

__all__ = [
    'ForwardRecord', 'PECapture', 'find_pe_backbone', 'pool_tokens',
    'LastNormSummary', 'PESummary', 'cosine', 'pearson', 'summarize',
    'token_norms'
]
