# The paper trains DeiT-B on 8 GPUs; 8 x 128 keeps the 1024 batch.
_base_ = './deit-tiny_pe_in1k.py'

model = dict(backbone=dict(arch='deit-base'), head=dict(in_channels=768))
train_dataloader = dict(batch_size=128)
