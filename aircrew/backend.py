"""Pick the WireGuard device backend for this machine.

The kernel backend (``aircrew.netlink_device``) needs pyroute2, about 10 MB resident in
the agent: it is imported only when the kernel backend is chosen. The probe for kernel
WireGuard needs only the standard library (``aircrew.rtnl``).
"""
from __future__ import annotations

import logging
import os

from wire.errors import InvalidInput

from .device import Device
from .device_errors import DeviceError
from .rtnl import genl_family_exists
from .uapi import UserspaceDevice

__all__ = ["open_device", "kernel_wireguard_available", "BACKENDS"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "kernel", "userspace")
SYSFS_MODULE = "/sys/module/wireguard"


def kernel_wireguard_available() -> bool:
    """True when this kernel can run WireGuard interfaces.

    The module is loaded (or built in) when ``/sys/module/wireguard`` exists. Otherwise
    we resolve the ``wireguard`` generic-netlink family, which also makes the kernel
    autoload the module when it is installed. Neither creates anything.
    """
    return os.path.isdir(SYSFS_MODULE) or genl_family_exists("wireguard")


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
        if not kernel_wireguard_available():
            raise DeviceError("kernel WireGuard is not available here (no wireguard module); "
                              "use the userspace backend")
        from .netlink_device import KernelDevice
        return KernelDevice(name)
    userspace = UserspaceDevice(name)
    if userspace.exists():
        log.info("%s: a userspace WireGuard already runs it; using the UAPI", name)
        return userspace
    if kernel_wireguard_available():
        from .netlink_device import KernelDevice
        log.info("%s: using kernel WireGuard", name)
        return KernelDevice(name)
    log.info("%s: no kernel WireGuard; using the userspace implementation", name)
    return userspace
