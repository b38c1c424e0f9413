"""Deployment and inspection: ONNX export with the PE chain folded, FLOP
counting with multi-scale deformable attention."""
from .onnx_export import (EXPORT_PARTS, export_onnx, export_module,
                          layernorm_calls, load_model, model_task)

__all__ = ['EXPORT_PARTS', 'export_onnx', 'export_module', 'layernorm_calls',
           'load_model', 'model_task']
