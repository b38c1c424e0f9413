_base_ = './_base_/deit-small_pe_in1k.py'

model = dict(backbone=dict(global_pool='cls', pe_cfg=dict(method='lape')))
