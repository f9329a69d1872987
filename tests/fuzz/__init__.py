"""Fuzz harness for the torch-free runtime's input readers (see tests/fuzz/harness.py)."""
