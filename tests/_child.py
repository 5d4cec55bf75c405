"""The environment of a child Python process that a test starts with several CPU devices."""

import os


def env_with_devices(n: int) -> dict:
    """``os.environ`` with ``n`` host CPU devices and JAX on the CPU, KEEPING the suite's
    compile flags (``XLA_FLAGS`` from tests/conftest.py: quicker to compile, and about
    100 MB less per child than XLA's defaults)."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
    return dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")
