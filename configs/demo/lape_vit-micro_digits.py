_base_ = './_base_/vit-micro_digits.py'

model = dict(backbone=dict(global_pool='cls', pe_cfg=dict(method='lape')))
