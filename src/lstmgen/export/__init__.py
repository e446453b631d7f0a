"""Smaller and faster models: int8 weights (int8.py, quantize.py) and ONNX export with a
torch-free onnxruntime backend (onnx_graph.py, onnx_export.py, onnx_runtime.py)."""
