"""Several hosts on one machine: network namespaces on a bridge of their own, each with its own
address, so that a node can be cut off from the others and from the clients, not only killed.

Root and Debian's iproute2 (``ip``). The bridge and the namespaces are named after the process
that made them, so two runs on one machine do not meet; :meth:`Network.destroy` removes them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

from millrace.errors import MillraceError


class NetworkError(MillraceError, RuntimeError):
    pass


@dataclass(frozen=True)
class Host:
    #: The network namespace.
    name: str
    address: str
    #: The host's end of its veth pair, on the bridge: down cuts the host off.
    link: str


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Network:
    """A bridge on ``10.213.<n>.0/24`` (the host is ``.1``) and the hosts added to it."""

    tag: str = field(default_factory=lambda: f"mr{os.getpid() % 100000}")
    subnet: str = field(default_factory=lambda: f"10.213.{os.getpid() % 200 + 20}")
    hosts: list[Host] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.tag}-br"

    def create(self) -> None:
        if os.geteuid() != 0:
            raise NetworkError("network namespaces need root (ip netns)")
        self.destroy()  # what a killed run of the same process id left
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        self._forwarding("-I")

    def _forwarding(self, action: str) -> None:
        """Let the nodes reach each other across the bridge where a firewall drops forwarded
        packets by default (a Docker Engine sets the FORWARD policy to DROP, and with
        br_netfilter bridged frames pass through it): ``action`` -I adds the rule, -D removes it."""
        iptables = shutil.which("iptables")
        if iptables is None:
            return
        rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        subprocess.run([iptables, action, *rule], capture_output=True)

    def address(self, index: int) -> str:
        return f"{self.subnet}.{10 + index}"

    def namespace(self, index: int) -> str:
        return f"{self.tag}-n{index}"

    def add_host(self, index: int) -> Host:
        host = Host(self.namespace(index), self.address(index), f"{self.tag}-h{index}")
        peer = f"{self.tag}-p{index}"
        _ip("netns", "add", host.name)
        _ip("link", "add", host.link, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", host.name)
        _ip("link", "set", host.link, "master", self.bridge)
        _ip("link", "set", host.link, "up")
        inside = ("netns", "exec", host.name, "ip")
        _ip(*inside, "addr", "add", f"{host.address}/24", "dev", peer)
        _ip(*inside, "link", "set", peer, "up")
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "route", "add", "default", "via", f"{self.subnet}.1")
        self.hosts.append(host)
        return host

    def cut(self, host: Host) -> None:
        """``host`` reaches nothing and nothing reaches it (its processes keep running)."""
        _ip("link", "set", host.link, "down")

    def heal(self, host: Host) -> None:
        _ip("link", "set", host.link, "up")

    def destroy(self) -> None:
        self._forwarding("-D")
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in listed.splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith(f"{self.tag}-n"):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(f"{self.tag}-"):
                subprocess.run(["ip", "link", "del", name], capture_output=True)
        self.hosts.clear()
