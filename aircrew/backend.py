"""Pick the WireGuard device backend for this machine.

The kernel backend (``aircrew.netlink_device``) needs pyroute2, about 10 MB resident in
the agent: it is imported only when the kernel backend is asked for or probed for.
"""
from __future__ import annotations

import logging

from wire.errors import InvalidInput

from .device import Device
from .device_errors import DeviceError
from .uapi import UserspaceDevice

__all__ = ["open_device", "BACKENDS"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "kernel", "userspace")


def open_device(name: str, prefer: str = "auto") -> Device:
    """A device for interface ``name``; nothing is created yet.

    ``auto``: a userspace device that already runs (its UAPI socket answers) stays
    userspace; otherwise kernel WireGuard when the kernel has it, else userspace.
    ``kernel`` fails clearly without kernel support; ``userspace`` always uses the UAPI.
    The userspace program is ``$WG_QUICK_USERSPACE_IMPLEMENTATION`` or ``wireguard-go``,
    as with wg-quick (see ``aircrew.uapi``).
    """
    if prefer not in BACKENDS:
        raise InvalidInput(f"unknown WireGuard backend {prefer!r} (one of {', '.join(BACKENDS)})")
    if prefer == "userspace":
        return UserspaceDevice(name)
    if prefer == "kernel":
        from .netlink_device import KernelDevice, kernel_wireguard_available
        if not kernel_wireguard_available():
            raise DeviceError("kernel WireGuard is not available here (no wireguard module); "
                              "use the userspace backend")
        return KernelDevice(name)
    userspace = UserspaceDevice(name)
    if userspace.exists():
        log.info("%s: a userspace WireGuard already runs it; using the UAPI", name)
        return userspace
    from .netlink_device import KernelDevice, kernel_wireguard_available
    if kernel_wireguard_available():
        log.info("%s: using kernel WireGuard", name)
        return KernelDevice(name)
    log.info("%s: no kernel WireGuard; using the userspace implementation", name)
    return userspace
