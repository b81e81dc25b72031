"""pytest plugins shared by the test tiers (registered with pytest_plugins in tests/conftest.py)."""
