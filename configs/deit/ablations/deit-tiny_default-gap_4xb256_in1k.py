# Fig. 1 / Fig. 5(a): Default PE with global average pooling.
_base_ = '../deit-tiny_default_4xb256_in1k.py'

model = dict(backbone=dict(global_pool='avg'))
