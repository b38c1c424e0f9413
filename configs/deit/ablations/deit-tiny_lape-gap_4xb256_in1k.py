# Fig. 1: the layer-wise structure (LaPE) with global average pooling, the
# combination whose accuracy drops.
_base_ = '../deit-tiny_lape_4xb256_in1k.py'

model = dict(backbone=dict(global_pool='avg'))
