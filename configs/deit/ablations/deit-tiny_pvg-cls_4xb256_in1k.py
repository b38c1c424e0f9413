# Fig. 6(a) / appendix: PVG with a class token (the Last-LN analysis).
_base_ = '../deit-tiny_pvg_4xb256_in1k.py'

model = dict(backbone=dict(global_pool='cls'))
