"""CPython fixture generators for device tests (see tests/conftest.py, prep=...)."""
