#!/usr/bin/env bash
# Distributed training with PyTorch's launcher (torchrun):
#   bash tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-node: on every node set NNODES, NODE_RANK (0..NNODES-1), MASTER_ADDR
# (the address of node 0) and the same PORT. Without CUDA the processes
# train on CPU over gloo (GPUS is then the number of processes).

CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

export PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH
python -m mmmpvg.engine.launch_check "$GPUS" || exit 1
python -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
