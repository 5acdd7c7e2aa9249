"""The libvirt domain of a guest on the libvirt hosts (`novamig.hypervisor.libvirt_hosts`), in the
shape Nova's libvirt driver writes for a 'tap' VIF, so that what is measured between the hosts is
what Nova would run: ``<interface type='ethernet'>`` on a tap made beforehand."""

from __future__ import annotations

import shutil
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from novamig.hypervisor.netns import GuestAddress


def tap_name(domain: str) -> str:
    """The tap of a guest: ``tap`` and the end of its name (interface names hold 15 characters;
    Nova's are ``tap`` and the start of the port's UUID)."""
    return f"tap{domain[-11:]}"


def tap_domain_xml(
    name: str,
    *,
    kernel: Path,
    initrd: Path,
    cmdline: str,
    address: GuestAddress,
    tap: str,
    memory_mib: int = 256,
    vcpus: int = 1,
) -> str:
    """A direct-kernel-boot domain in the shape Nova's libvirt driver writes for a 'tap' VIF:
    ``<interface type='ethernet'>`` on a tap made beforehand (``managed='no'``: libvirt neither
    creates nor deletes it), a virtio NIC, a serial console logged to a file, a fixed CPU model
    (``qemu64``: the same on both hosts, so the guest can migrate)."""
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{escape(str(kernel))}</kernel>
    <initrd>{escape(str(initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <clock offset='utc'/>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>{escape(shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64")}</emulator>
    <serial type='pty'>
      <log file={quoteattr(f"/var/log/libvirt/qemu/{name}-console.log")} append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <interface type='ethernet'>
      <mac address={quoteattr(address.mac)}/>
      <target dev={quoteattr(tap)} managed='no'/>
      <model type='virtio'/>
    </interface>
    <memballoon model='none'/>
    <video><model type='none'/></video>
  </devices>
</domain>
"""
