"""Joining or starting Ray, the same way for every job (annotate, extract)."""

import logging
import os
from typing import Optional


def start_ray(address: Optional[str], quiet: bool = False) -> bool:
    """Connect to ``address`` (else ``$RAY_ADDRESS``), or start a local Ray.
    ``quiet`` (command lines without -v): Ray's start-up and Ray Data's INFO
    lines stay at WARNING or above. RETURNS whether this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        # A local cluster of our own: bound to this machine; keep uv from zipping the repo.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    level = logging.INFO
    if quiet:
        from .cli_logging import quiet_ray

        level = quiet_ray()
    ray.init(address=address, include_dashboard=False, log_to_driver=True, logging_level=level)
    return True
