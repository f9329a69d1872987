"""spinefx.demo: the Gradio app for clinicians and teaching sessions (no torch).

Not built yet: see the issue "Gradio demo for clinicians and teaching sessions".
"""
