_base_ = './_base_/deit-base_pe_in1k.py'

model = dict(backbone=dict(global_pool='avg', pe_cfg=dict(method='pvg')))
