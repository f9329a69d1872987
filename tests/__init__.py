"""The spinefx test suite: a package, so every folder can import ``tests.helpers``."""
