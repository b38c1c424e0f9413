_base_ = './_base_/vit-micro_digits.py'

model = dict(backbone=dict(global_pool='avg', pe_cfg=dict(method='pvg')))
