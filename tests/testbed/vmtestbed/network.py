"""The test bed's network: each host in a network namespace of its own.

Layout, for sandbox subnet S with hosts h1…hN::

    root namespace (operator, CLI, benches)
      vmmS-mgmt 10.240.S.1 ──┐
                             │  namespace vmmS-sw (the switch)
                             ├─ bridge mgmt ── hI-mgmt ─┐
                             └─ bridge mig  ── hI-mig  ─┤
                                                        │ namespace vmmS-hI (a host)
                                             mgmt0 10.240.S.(I+1)
                                             mig0  10.241.S.(I+1)

The management network carries libvirt's RPC (the operator's connections
and a source daemon's connection to its peer) and SSH; the migration network
carries QEMU's memory stream (each host's ``migration_host``). The root
namespace is on the management network only, and nothing is routed beyond:
no address here leaves the namespaces the test bed made.

Faults and shaping are levers on a host's side of a link: ``tbf`` on both
ends of the veth for bandwidth (this kernel has no ``netem``, so there is no
delay), and an nftables table in the host's namespace for loss, cuts and
partitions. Every name starts with ``vmmS-``, so ``up`` and ``down`` can
remove what a killed run left by name, and nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Literal

Link = Literal["management", "migration"]
LINKS: tuple[Link, ...] = ("management", "migration")
INTERFACE: dict[str, str] = {"management": "mgmt0", "migration": "mig0"}
BRIDGE: dict[str, str] = {"management": "mgmt", "migration": "mig"}
TABLE = "vmmtestbed"


class NetworkError(RuntimeError):
    pass


def _run(*argv: str, input_text: str | None = None) -> str:
    done = subprocess.run(list(argv), input=input_text, capture_output=True, text=True)
    if done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclasses.dataclass(frozen=True)
class Faults:
    """What is wrong with one host's links now (rendered into its nftables table)."""

    cut: tuple[str, ...] = ()  # interfaces that drop everything
    reset: tuple[str, ...] = ()  # interfaces whose TCP connections are reset, the rest dropped
    loss: tuple[tuple[str, float], ...] = ()  # (interface, percent)
    unreachable_from: tuple[str, ...] = ()  # peer addresses whose traffic is dropped

    def ruleset(self) -> str:
        rules: list[str] = []
        for interface in self.cut:
            rules += [f'iifname "{interface}" drop', f'oifname "{interface}" drop']
        for interface in self.reset:
            # A reset, unlike a silent drop, fails the sockets at once on both
            # ends: what a peer that reboots or a firewall that closes does.
            rules += [f'iifname "{interface}" meta l4proto tcp reject with tcp reset',
                      f'iifname "{interface}" drop',
                      # The resets the inbound rule sends must leave; all else is cut.
                      f'oifname "{interface}" tcp flags & rst == rst accept',
                      f'oifname "{interface}" meta l4proto tcp reject with tcp reset',
                      f'oifname "{interface}" drop']
        for interface, percent in self.loss:
            # numgen over 10000 gives loss in hundredths of a percent.
            share = round(percent * 100)
            rules += [f'iifname "{interface}" numgen random mod 10000 < {share} drop',
                      f'oifname "{interface}" numgen random mod 10000 < {share} drop']
        for address in self.unreachable_from:
            rules += [f"ip saddr {address} drop", f"ip daddr {address} drop"]
        inbound = "\n".join(f"    {r}" for r in rules if not r.startswith(("oifname", "ip daddr")))
        outbound = "\n".join(f"    {r}" for r in rules if not r.startswith(("iifname", "ip saddr")))
        return (f"table inet {TABLE} {{\n"
                f"  chain inbound {{\n    type filter hook input priority 0; policy accept;\n"
                f"{inbound}\n  }}\n"
                f"  chain outbound {{\n    type filter hook output priority 0; policy accept;\n"
                f"{outbound}\n  }}\n}}\n")


@dataclasses.dataclass(frozen=True)
class Network:
    subnet: int
    count: int
    state_file: Path

    @property
    def tag(self) -> str:
        return f"vmm{self.subnet}"

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    @property
    def root_link(self) -> str:
        return f"{self.tag}-mgmt"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the management network: the operator's."""
        return f"10.240.{self.subnet}.1"

    def namespace(self, index: int) -> str:
        return f"{self.tag}-h{index + 1}"

    def address(self, index: int, link: Link = "management") -> str:
        net = 240 if link == "management" else 241
        return f"10.{net}.{self.subnet}.{index + 2}"

    # ---- life cycle -------------------------------------------------------

    def ours(self) -> list[str]:
        """The namespaces of this subnet that exist now (a killed run may have left them)."""
        listed = _run("ip", "netns", "list")
        names = [line.split()[0] for line in listed.splitlines() if line.strip()]
        return [n for n in names if n.startswith(f"{self.tag}-")]

    def up(self) -> None:
        self.down()
        try:
            self._build()
        except BaseException:
            self.down()
            raise

    def _build(self) -> None:
        sw = self.switch
        _run("ip", "netns", "add", sw)
        _run("ip", "-n", sw, "link", "set", "lo", "up")
        for bridge in BRIDGE.values():
            _run("ip", "-n", sw, "link", "add", bridge, "type", "bridge")
            _run("ip", "-n", sw, "link", "set", bridge, "up")
        for index in range(self.count):
            ns = self.namespace(index)
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            # A SYN into a partition is dropped, and Linux retries it for about
            # two minutes by default; three retries (about 15 s) keep a
            # partitioned peer-to-peer connect inside a test's budget. This is
            # a per-namespace setting, as an admin would tune a real host.
            _run("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=3")
            # A post-copy whose link was cut carries on by itself when the link
            # returns, at TCP's next retransmission, but TCP backs off: after a
            # 20 s cut its next try came 16 s after the heal, with the guest's
            # missing pages on hold all the while. Capping the backoff at 1 s
            # (Linux 6.15 and later) resumes the stream within a second of the
            # heal; 255 tries keep a silent socket for about 4 minutes, rather
            # than failing it early, which can strand a target that has nothing
            # left to resend (docs/network.md, "Post-copy, cut").
            _run("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.tcp_rto_max_ms=1000",
                 "net.ipv4.tcp_retries2=255")
            for link in LINKS:
                interface, port = INTERFACE[link], self._switch_port(index, link)
                _run("ip", "link", "add", interface, "netns", ns, "type", "veth",
                     "peer", "name", port, "netns", sw)
                _run("ip", "-n", sw, "link", "set", port, "master", BRIDGE[link], "up")
                _run("ip", "-n", ns, "addr", "add", f"{self.address(index, link)}/24",
                     "dev", interface)
                _run("ip", "-n", ns, "link", "set", interface, "up")
        _run("ip", "link", "add", self.root_link, "type", "veth", "peer", "name", "root", "netns", sw)
        _run("ip", "-n", sw, "link", "set", "root", "master", BRIDGE["management"], "up")
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.root_link)
        _run("ip", "link", "set", self.root_link, "up")
        self._save({})

    def down(self) -> list[str]:
        removed = []
        for ns in self.ours():
            # Anything still inside was started by the test bed (daemons stop
            # their own first); a namespace with processes in it would linger.
            for pid in _run("ip", "netns", "pids", ns).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _run("ip", "netns", "del", ns)
            removed.append(f"netns {ns}")
        if Path(f"/sys/class/net/{self.root_link}").exists():
            _run("ip", "link", "del", self.root_link)
            removed.append(f"link {self.root_link}")
        self.state_file.unlink(missing_ok=True)
        return removed

    def exec_prefix(self, index: int) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(index)]

    # ---- shaping ----------------------------------------------------------

    def _switch_port(self, index: int, link: Link) -> str:
        return f"h{index + 1}-{BRIDGE[link]}"

    def shape(self, index: int, *, link: Link = "migration", rate_mbit: float | None) -> None:
        """Limit the host's link to ``rate_mbit`` each way (None: unlimited again).

        Settable while a migration runs: ``tbf`` on both ends of the veth, so
        what the host sends and what it receives are both limited.
        """
        ends = [(self.namespace(index), INTERFACE[link]), (self.switch, self._switch_port(index, link))]
        for ns, device in ends:
            if rate_mbit is None:
                with contextlib.suppress(NetworkError):
                    _run("tc", "-n", ns, "qdisc", "del", "dev", device, "root")
                continue
            rate_bytes = rate_mbit * 1e6 / 8
            # The bucket must hold at least one timer tick of traffic (and a
            # few full-size frames) or tbf cannot reach its rate.
            burst = max(64 * 1024, int(rate_bytes / 100))
            _run("tc", "-n", ns, "qdisc", "replace", "dev", device, "root", "tbf",
                 "rate", f"{rate_mbit}mbit", "burst", str(burst), "latency", "100ms")

    # ---- faults (nftables in the host's namespace) -------------------------

    def cut(self, index: int, *, link: Link = "migration") -> None:
        """Drop everything on the host's link, as a pulled cable does: no reset is sent."""
        self._change(index, cut=INTERFACE[link])

    def reset(self, index: int, *, link: Link = "migration") -> None:
        """Cut the host's link so that its TCP connections fail at once (a reset both ways)."""
        faults = self._faults(index)
        self._apply(index, dataclasses.replace(
            faults, reset=tuple(sorted(set(faults.reset) | {INTERFACE[link]}))))
        # The rules reset a connection only when a segment crosses it, and an idle
        # end may send none for minutes. Aborting every socket on the link's
        # address fails this end now and sends the peer its reset, as a rebooted
        # peer or a firewall that closes connections does.
        _run("ip", "netns", "exec", self.namespace(index), "ss", "-K", "-t", "src",
             self.address(index, link))

    def loss(self, index: int, *, percent: float, link: Link = "migration") -> None:
        """Drop ``percent`` of the packets each way on the host's link (0: none)."""
        faults = self._faults(index)
        kept = tuple((i, p) for i, p in faults.loss if i != INTERFACE[link])
        self._apply(index, dataclasses.replace(
            faults, loss=kept + (((INTERFACE[link], percent),) if percent > 0 else ())))

    def cut_from_operator(self, index: int) -> None:
        """The management path between the root namespace and the host only; peers still talk."""
        self._change(index, unreachable=self.gateway)

    def partition(self, a: int, b: int) -> None:
        """Hosts ``a`` and ``b`` cannot reach each other on any link; the operator sees both."""
        for one, other in ((a, b), (b, a)):
            for link in LINKS:
                self._change(one, unreachable=self.address(other, link))

    def restore(self, index: int | None = None) -> None:
        """Undo every fault (and shaping) on one host, or on all."""
        for i in range(self.count) if index is None else [index]:
            self._apply(i, Faults())
            for link in LINKS:
                self.shape(i, link=link, rate_mbit=None)

    def _change(self, index: int, *, cut: str | None = None,
                unreachable: str | None = None) -> None:
        faults = self._faults(index)
        if cut is not None:
            faults = dataclasses.replace(faults, cut=tuple(sorted(set(faults.cut) | {cut})))
        if unreachable is not None:
            faults = dataclasses.replace(faults, unreachable_from=tuple(
                sorted(set(faults.unreachable_from) | {unreachable})))
        self._apply(index, faults)

    def _faults(self, index: int) -> Faults:
        raw = self._load().get(self.namespace(index), {})
        return Faults(cut=tuple(raw.get("cut", ())), reset=tuple(raw.get("reset", ())),
                      loss=tuple((str(i), float(p)) for i, p in raw.get("loss", ())),
                      unreachable_from=tuple(raw.get("unreachable_from", ())))

    def _apply(self, index: int, faults: Faults) -> None:
        ns = self.namespace(index)
        # Declaring the table first makes the delete succeed on a first run;
        # the whole file is applied atomically.
        script = f"table inet {TABLE}\ndelete table inet {TABLE}\n" + faults.ruleset()
        _run("ip", "netns", "exec", ns, "nft", "-f", "-", input_text=script)
        state = self._load()
        state[ns] = dataclasses.asdict(faults)
        self._save(state)

    def _load(self) -> dict[str, dict[str, list]]:  # type: ignore[type-arg]
        try:
            loaded = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def _save(self, state: dict[str, dict[str, list]]) -> None:  # type: ignore[type-arg]
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2))
