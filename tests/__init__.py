"""The spinefx test suite (a package, so ``from tests.helpers... import`` works from every folder)."""
