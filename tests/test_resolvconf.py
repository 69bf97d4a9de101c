"""resolv.conf parsing (glibc's rules), the systemd-resolved fallback, and loop detection.

Every file read here is one the test wrote itself; the machine's /etc/resolv.conf is never read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsserver.config import resolvconf
from dnsserver.config.resolvconf import ResolvConf, Upstream
from dnsserver.plugins import upstream as forward

KUBELET = """\
nameserver 10.96.0.10
search default.svc.cluster.local svc.cluster.local cluster.local
options ndots:5
"""

PARSE_CASES: list[tuple[str, str, ResolvConf]] = [
    ("empty", "", ResolvConf()),
    ("kubelet ClusterFirst", KUBELET, ResolvConf(
        nameservers=(Upstream("10.96.0.10"),),
        search=("default.svc.cluster.local", "svc.cluster.local", "cluster.local"),
        ndots=5, options=("ndots:5",),
    )),
    ("comments, blanks, tabs", "# a comment\n; another\n\n\tnameserver\t192.0.2.1 # not ours\n",
     ResolvConf(nameservers=(Upstream("192.0.2.1"),))),
    ("every nameserver kept in order, IPv6 and scope",
     "nameserver 192.0.2.1\nnameserver 2001:db8::53\nnameserver fe80::1%eth0\n"
     "nameserver 192.0.2.4\n",
     ResolvConf(nameservers=(Upstream("192.0.2.1"), Upstream("2001:db8::53"),
                             Upstream("fe80::1%eth0"), Upstream("192.0.2.4")))),
    ("our port extension", "nameserver 127.0.0.1:5300\nnameserver [::1]:5301\n",
     ResolvConf(nameservers=(Upstream("127.0.0.1", 5300), Upstream("::1", 5301)))),
    ("last of search/domain wins", "search a.example b.example\ndomain c.example.\n",
     ResolvConf(search=("c.example",))),
    ("search after domain", "domain c.example\nsearch a.example. b.example\n",
     ResolvConf(search=("a.example", "b.example"))),
    ("root in the search list", "search example.com .\n",
     ResolvConf(search=("example.com", "."))),
    ("ndots capped at 15", "options ndots:30\n", ResolvConf(ndots=15, options=("ndots:30",))),
    ("ndots 0", "options ndots:0\n", ResolvConf(ndots=0, options=("ndots:0",))),
    ("later options override, across lines",
     "options ndots:2 timeout:3\noptions ndots:4 attempts:9 rotate edns0 single-request\n",
     ResolvConf(ndots=4, timeout=3, attempts=5, rotate=True,
                options=("ndots:2", "timeout:3", "ndots:4", "attempts:9", "rotate", "edns0",
                         "single-request"))),
    ("timeout capped at 30, floored at 1", "options timeout:99\noptions attempts:0\n",
     ResolvConf(timeout=30, attempts=1, options=("timeout:99", "attempts:0"))),
    ("sortlist ignored", "sortlist 130.155.160.0/255.255.240.0\nnameserver 192.0.2.1\n",
     ResolvConf(nameservers=(Upstream("192.0.2.1"),))),
    ("CRLF line ends", "nameserver 192.0.2.1\r\nsearch example.com\r\n",
     ResolvConf(nameservers=(Upstream("192.0.2.1"),), search=("example.com",))),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in PARSE_CASES],
                         ids=[name for name, _, _ in PARSE_CASES])
def test_parse(text: str, expected: ResolvConf) -> None:
    parsed = resolvconf.parse(text)
    assert parsed == expected
    assert parsed.problems == ()


def test_default_port_applies_to_nameservers_without_one() -> None:
    parsed = resolvconf.parse("nameserver 127.0.0.1\nnameserver [::1]:53\nnameserver ::1\n",
                              default_port=5353)
    assert parsed.nameservers == (
        Upstream("127.0.0.1", 5353), Upstream("::1", 53), Upstream("::1", 5353),
    )


def test_bad_lines_are_skipped_and_reported() -> None:
    parsed = resolvconf.parse(
        "nameserver\nnameserver dns.example.com\nnameserver 192.0.2.1\n"
        "options ndots:many\nfrobnicate yes\n"
    )
    assert parsed == ResolvConf(nameservers=(Upstream("192.0.2.1"),), options=("ndots:many",))
    assert parsed.ndots == 1
    assert [p.split(":")[0] for p in parsed.problems] == [
        "line 1", "line 2", "line 5", "option 'ndots",
    ]


def test_read_a_file(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(KUBELET)
    assert resolvconf.read(path).ndots == 5
    with pytest.raises(OSError):
        resolvconf.read(tmp_path / "missing")


# -- systemd-resolved -----------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_systemd_resolved_stub_is_replaced_by_the_real_upstreams(tmp_path: Path) -> None:
    etc = write(tmp_path / "etc-resolv.conf",
                "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example\n")
    run = write(tmp_path / "run-resolv.conf", "nameserver 192.0.2.1\nnameserver 192.0.2.2\n")
    choice = resolvconf.systemd_resolved_fallback(etc, run)
    assert choice.path == run
    assert choice.conf.nameservers == (Upstream("192.0.2.1"), Upstream("192.0.2.2"))
    assert choice.note == (
        f"{etc} names only the systemd-resolved stub (127.0.0.53:53); using the upstreams in "
        f"{run} instead: 192.0.2.1:53, 192.0.2.2:53"
    )


@pytest.mark.parametrize("text", [
    "nameserver 192.0.2.1\n",
    "nameserver 127.0.0.53\nnameserver 192.0.2.1\n",  # not only the stub
    "nameserver 127.0.0.53:5353\n",  # not the stub's port
    "",
])
def test_other_files_are_used_as_they_are(tmp_path: Path, text: str) -> None:
    etc = write(tmp_path / "etc-resolv.conf", text)
    run = write(tmp_path / "run-resolv.conf", "nameserver 192.0.2.9\n")
    choice = resolvconf.systemd_resolved_fallback(etc, run)
    assert (choice.path, choice.note) == (etc, None)
    assert choice.conf == resolvconf.parse(text)


def test_stub_without_usable_upstream_file_is_kept_and_said(tmp_path: Path) -> None:
    etc = write(tmp_path / "etc-resolv.conf", "nameserver 127.0.0.54\n")
    choice = resolvconf.systemd_resolved_fallback(etc, tmp_path / "missing")
    assert choice.path == etc
    assert choice.conf.nameservers == (Upstream("127.0.0.54"),)
    assert choice.note is not None and "cannot be read" in choice.note
    empty = write(tmp_path / "run-resolv.conf", "# no servers\n")
    choice = resolvconf.systemd_resolved_fallback(etc, empty)
    assert choice.path == etc
    assert choice.note is not None and "names no nameserver" in choice.note
    # the caller's loop rule then refuses the loopback stub
    assert forward.is_loopback(choice.conf.nameservers[0])


# -- loops ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.53", True), ("127.1.2.3", True), ("::1", True),
    ("::ffff:127.0.0.1", True), ("10.96.0.10", False), ("2001:db8::1", False),
    ("fe80::1%eth0", False), ("0.0.0.0", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert forward.is_loopback(forward.parse_upstream(host)) is loopback


LOOP_CASES = [
    # (upstream, listen addresses, is a loop)
    ("127.0.0.1:53", [("127.0.0.1", 53)], True),
    ("127.0.0.1:53", [("127.0.0.1", 5353)], False),  # another port: another server
    ("127.0.0.2:53", [("127.0.0.1", 53)], False),  # bound to .1 only
    ("127.0.0.53:53", [("0.0.0.0", 53)], True),  # a wildcard listener takes all of 127/8
    ("[::1]:53", [("0.0.0.0", 53)], False),
    ("[::1]:53", [("::", 53)], True),
    ("127.0.0.1:53", [("::", 53)], True),  # :: may be dual-stack
    ("[::1]:53", [("::1", 53)], True),
    ("[::ffff:127.0.0.1]:53", [("127.0.0.1", 53)], True),
    ("10.0.0.5:53", [("10.0.0.5", 53)], True),  # our own non-loopback address
    ("10.0.0.5:53", [("0.0.0.0", 53)], False),  # cannot know without the interfaces
    ("192.0.2.1:53", [("127.0.0.1", 53), ("0.0.0.0", 53)], False),
]


@pytest.mark.parametrize(("upstream", "listen", "loop"), LOOP_CASES)
def test_points_at_us(upstream: str, listen: list[tuple[str, int]], loop: bool) -> None:
    parsed = forward.parse_upstream(upstream)
    assert forward.points_at_us([parsed], listen) == ([parsed] if loop else [])

