"""spinefx.export: torch -> ONNX with in-graph Grad-CAM and parity gates.

Not built yet: see the issue "ONNX export with in-graph Grad-CAM".
"""
