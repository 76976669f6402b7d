"""What this process may allocate: the one number size checks compare against."""

from __future__ import annotations

import os
import resource


def memory_limit() -> int:
    """Bytes this process may use: the address-space limit (``ulimit -v``) where one is set and
    smaller, else the machine's physical memory."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return min(physical, soft) if soft not in (resource.RLIM_INFINITY, -1) and soft > 0 else physical
