# Default PE with global average pooling: separates the pooling effect from
# the PE method when comparing with MPVG.
_base_ = './_base_/vit-micro_digits.py'

model = dict(backbone=dict(global_pool='avg', pe_cfg=dict(method='default')))
