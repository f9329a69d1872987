"""spinefx.train: the paper's 6-channel ResNet50, tenfold CV and reports (PyTorch).

Not built yet: see the issue "Training and evaluation". It will import preprocessing from
``spinefx.runtime`` (never a copy).
"""
