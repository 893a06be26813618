"""Shared pytest configuration."""


def pytest_configure(config):
    config.addinivalue_line("markers", "kernel: needs root and real kernel objects (runs in a throwaway netns)")
