"""The kernel-WireGuard probe and KernelDevice, checked against the kernel in a namespace."""
from __future__ import annotations

import logging
import os

import pytest

from aircrew.backend import kernel_wireguard_available
from aircrew.device_errors import DeviceError
from testbed.lab import standalone

KERNEL = kernel_wireguard_available()


def test_probe_agrees_with_the_kernel(caplog):
    """The probe says what creating a WireGuard link finds out, and logs no error."""
    with caplog.at_level(logging.DEBUG):
        available = kernel_wireguard_available()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with standalone("probe") as host:
        made = host.run(["ip", "link", "add", "wgprobe", "type", "wireguard"], check=False)
    assert available is (made.returncode == 0), made.stderr
    if os.path.isdir("/sys/module/wireguard"):
        assert available


@pytest.mark.skipif(KERNEL, reason="this kernel has WireGuard")
def test_kernel_device_fails_clearly_without_the_module():
    with standalone("k") as host:
        device = host.worker().new("aircrew.netlink_device:KernelDevice", "wg0")
        assert device.exists() is False
        device.destroy()                                   # nothing to remove: no-op
        with pytest.raises(DeviceError, match="no WireGuard support"):
            device.create()
        with pytest.raises(DeviceError, match="no wireguard module"):
            device.read()
        host.run(["ip", "link", "add", "wg0", "type", "veth", "peer", "name", "wg1"])
        with pytest.raises(DeviceError, match="not a kernel WireGuard interface"):
            device.create()
