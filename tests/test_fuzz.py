"""Hostile packets: :meth:`Handler.handle` fuzzed in-process, then the real server over UDP/TCP.

The properties and generators live in :mod:`bench.fuzz` (its docstring lists them); the long
run is ``python -m bench.fuzz``. Here: a seeded bulk loop (valid queries, each also cut at every
length and mutated), every qtype, hypothesis strategies for shrinking (random bytes, queries,
compression pointers, long labels and names, count lies, several OPT records), and a burst of
the same garbage at a real server on loopback, which must still answer afterwards and print no
traceback. The number of cases is printed at the end of the module.
"""

from __future__ import annotations

import contextlib
import random
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `bench` is not installed; plain `pytest` does not add the root
    sys.path.insert(0, str(REPO))

from conftest import RunningServer, StartServer, read_exact  # noqa: E402

from bench import fuzz  # noqa: E402

pytestmark = pytest.mark.timeout(300)

HANDLER = fuzz.build_handler()
CHECKER = fuzz.Checker(HANDLER)
NAMES = fuzz.zone_names(HANDLER)
MIN_CASES = 100_000
BULK_QUERIES = 1_500  # each is also cut at every length and mutated: ~60 cases apiece
MUTATIONS_PER_QUERY = 8
MIXED_CASES = 12_000
FUZZ = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
QUESTION_TAIL = b"\x00\x01\x00\x01"
WEB = b"\x03web\x07default\x03svc\x07cluster\x05local\x00"


def header(ident: int = 0x4242, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return fuzz.HEADER.pack(ident, flags, qd, an, ns, ar)


def check(data: bytes, tcp: bool = False, expect_rcode: int | None = None,
          valid: bool = False) -> dns.message.Message | None:
    return CHECKER.check(data, tcp, expect_rcode, valid)


@pytest.fixture(scope="module", autouse=True)
def _report_case_count(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the number of cases at the end of the module, past pytest's output capture."""
    started = time.monotonic()
    yield
    line = (f"test_fuzz: {CHECKER.cases:,} cases through Handler.handle in "
            f"{time.monotonic() - started:.1f} s")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{line}")


# -- seeded loops: the bulk of the cases ---------------------------------------------------------


def test_bulk_valid_queries_cut_at_every_length_and_mutated() -> None:
    rng = random.Random(20261128)
    failures = fuzz.Failures()
    for _ in range(BULK_QUERIES):
        case = fuzz.valid_query(rng, NAMES)
        cases = [case]
        cases += [fuzz.Case(case.data[:length], case.tcp) for length in range(len(case.data))]
        cases += [fuzz.Case(fuzz.mutate(rng, case.data), case.tcp)
                  for _ in range(MUTATIONS_PER_QUERY)]
        for one in cases:
            try:
                check(one.data, one.tcp, one.expect_rcode, one.valid)
            except fuzz.PropertyFailed as failure:
                failures.add(failure)
    if failures.first:
        pytest.fail(_summary(failures), pytrace=False)


def test_bulk_mixed_cases() -> None:
    """Valid, cut, mutated, hand-made hostile and random messages, as ``bench.fuzz`` mixes them."""
    failures = fuzz.Failures()
    for _, case in zip(range(MIXED_CASES), fuzz.cases(7, NAMES), strict=False):
        try:
            check(case.data, case.tcp, case.expect_rcode, case.valid)
        except fuzz.PropertyFailed as failure:
            failures.add(failure)
    if failures.first:
        pytest.fail(_summary(failures), pytrace=False)


def test_every_qtype() -> None:
    """Each of the 65,536 qtypes once, on names of the zone in random case, half with EDNS."""
    rng = random.Random(5)
    names = [dns.name.from_text(name).to_wire(file=None) or b"" for name in NAMES]
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    failures = fuzz.Failures()
    for qtype in range(65536):
        name = bytes(c ^ 0x20 if 0x61 <= c <= 0x7A and rng.random() < 0.3 else c
                     for c in names[qtype % len(names)])
        edns = qtype % 2
        data = header(ident=qtype, ar=edns) + name + struct.pack(">HH", qtype, 1) + opt * edns
        try:
            check(data, tcp=qtype % 7 == 0, valid=True)
        except fuzz.PropertyFailed as failure:
            failures.add(failure)
    if failures.first:
        pytest.fail(_summary(failures), pytrace=False)


def _summary(failures: fuzz.Failures) -> str:
    return (f"{failures.count} cases broke a property, {len(failures.first)} distinct:\n"
            + "\n".join(str(f) for f in failures.first.values()))


# -- hypothesis: the same properties, with shrinking --------------------------------------------

labels = st.binary(min_size=1, max_size=63)
qtypes = st.one_of(st.sampled_from(fuzz.QTYPES_OF_NOTE), st.integers(0, 65535))


@st.composite
def query_names(draw: st.DrawFn) -> dns.name.Name:
    source = draw(st.sampled_from(("zone", "under-zone", "random")))
    if source == "random":
        parts = draw(st.lists(labels, max_size=8))
    else:
        parts = list(dns.name.from_text(draw(st.sampled_from(NAMES))).labels[:-1])
        if source == "under-zone":
            parts = draw(st.lists(labels, min_size=1, max_size=3)) + parts
    while sum(len(p) + 1 for p in parts) + 1 > 255:
        parts.pop(0)
    flips = draw(st.integers(0, 2**64 - 1))
    parts = [bytes(c ^ 0x20 if 0x61 <= c <= 0x7A and flips >> (i % 64) & 1 else c
                   for i, c in enumerate(p)) for p in parts]
    return dns.name.Name([*parts, b""])


@st.composite
def queries(draw: st.DrawFn) -> fuzz.Case:
    """A dnspython-built query: every qtype, class mostly IN, EDNS on or off with a random
    version, size, DO bit and options, random RD/AD/CD flags and ID."""
    qclass = draw(st.one_of(st.just(1), st.integers(0, 65535)))
    edns = draw(st.booleans())
    version = draw(st.one_of(st.just(0), st.integers(0, 255))) if edns else -1
    options: list[dns.edns.Option] = draw(st.lists(
        st.builds(dns.edns.GenericOption, st.integers(0, 65535).map(dns.edns.OptionType.make),
                  st.binary(max_size=40)),
        max_size=3)) if edns else []
    message = dns.message.make_query(
        draw(query_names()), dns.rdatatype.RdataType.make(draw(qtypes)),
        dns.rdataclass.RdataClass.make(qclass), use_edns=version,
        payload=draw(st.integers(0, 65535)), want_dnssec=draw(st.booleans()), options=options,
    )
    message.id = draw(st.integers(0, 65535))
    message.flags = dns.flags.Flag(draw(st.sampled_from((0, 0x0100, 0x0120, 0x0110, 0x0030))))
    expect = fuzz.BADVERS if version > 0 else fuzz.REFUSED if qclass != 1 else None
    return fuzz.Case(message.to_wire(), draw(st.booleans()), expect, valid=True)


@FUZZ
@given(data=st.binary(max_size=600), tcp=st.booleans())
def test_random_bytes(data: bytes, tcp: bool) -> None:
    check(data, tcp)


@FUZZ
@given(data=st.binary(min_size=12, max_size=300))
def test_random_bytes_with_a_query_header(data: bytes) -> None:
    """Past the 12-byte header with QR=0 and opcode QUERY, so the parser is reached."""
    body = data[:2] + bytes((data[2] & 0x07, data[3])) + b"\x00\x01" + data[6:]
    check(body)
    check(body, tcp=True)


@FUZZ
@given(case=queries(), mutations=st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 255)),
                                          min_size=1, max_size=6))
def test_queries_cut_at_every_length_and_mutated(
    case: fuzz.Case, mutations: list[tuple[int, int]],
) -> None:
    check(case.data, case.tcp, case.expect_rcode, case.valid)
    for length in range(len(case.data)):
        check(case.data[:length], case.tcp)
    mutated = bytearray(case.data)
    for position, value in mutations:
        mutated[position % len(mutated)] = value
    check(bytes(mutated), case.tcp)


@FUZZ
@given(prefix=st.lists(st.binary(min_size=1, max_size=10), max_size=3),
       pointer=st.integers(0, 0x3FFF), tail=st.binary(max_size=30))
def test_compression_pointers_in_the_question(
    prefix: list[bytes], pointer: int, tail: bytes,
) -> None:
    """No pointer can be valid in the first name of a message: whatever it points to (the
    header, itself: a loop, or forward), the answer is FORMERR."""
    name = b"".join(bytes((len(label),)) + label for label in prefix)
    data = header() + name + struct.pack(">H", 0xC000 | pointer) + QUESTION_TAIL + tail
    check(data, expect_rcode=fuzz.FORMERR)


@FUZZ
@given(prefix=st.lists(labels, max_size=2), length=st.integers(64, 191), tail=st.binary(max_size=300))
def test_label_over_63_octets(prefix: list[bytes], length: int, tail: bytes) -> None:
    name = b"".join(bytes((len(label),)) + label for label in prefix) + bytes((length,))
    check(header() + name + tail, expect_rcode=fuzz.FORMERR)


@FUZZ
@given(octets=st.one_of(st.integers(250, 262), st.integers(3, 600)), seed=st.integers(0, 2**32),
       suffix=st.sampled_from((b"", b"\x03svc\x07cluster\x05local\x00", WEB)),
       opt=st.booleans())
def test_names_over_255_octets(octets: int, seed: int, suffix: bytes, opt: bool) -> None:
    """Legal labels adding up to more than 255 octets: FORMERR. Up to 255: answered."""
    name = fuzz.long_name(random.Random(seed), max(octets, len(suffix)), suffix=suffix)
    edns = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00" if opt else b""
    data = header(ar=int(opt)) + name + QUESTION_TAIL + edns
    if len(name) > 255:
        check(data, expect_rcode=fuzz.FORMERR)
    else:
        check(data, valid=True)


@pytest.mark.parametrize("octets", [254, 255, 256, 257, 300])
def test_name_length_boundary(octets: int) -> None:
    name = fuzz.long_name(random.Random(octets), octets, suffix=b"\x03svc\x07cluster\x05local\x00")
    assert len(name) == octets
    for data in (header() + name + QUESTION_TAIL,  # the fast path's shape
                 header(flags=0x0110) + name + QUESTION_TAIL):  # AD bit: the same query
        if octets > 255:
            check(data, expect_rcode=fuzz.FORMERR)
        else:
            check(data, expect_rcode=fuzz.NXDOMAIN)


@FUZZ
@given(qd=st.integers(0, 65535), an=st.integers(0, 65535), ns=st.integers(0, 65535),
       ar=st.integers(0, 65535), records=st.integers(0, 4), tail=st.binary(max_size=20))
def test_count_lies(qd: int, an: int, ns: int, ar: int, records: int, tail: bytes) -> None:
    """Section counts that do not match what follows the header."""
    record = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04\x0a\x00\x00\x01"
    data = header(qd=qd, an=an, ns=ns, ar=ar) + WEB + QUESTION_TAIL + record * records + tail
    reply = check(data, tcp=records % 2 == 1)
    claimed = an + ns + ar
    if qd != 1 or (claimed > records and not tail):
        assert reply is not None and reply.rcode() == fuzz.FORMERR, (data, reply)


@FUZZ
@given(count=st.integers(2, 5), sizes=st.lists(st.integers(0, 65535), min_size=5, max_size=5),
       others=st.integers(0, 2))
def test_several_opt_records(count: int, sizes: list[int], others: int) -> None:
    """RFC 6891 §6.1.1: more than one OPT in a query is a FORMERR."""
    record = b"\xc0\x0c\x00\x10\x00\x01\x00\x00\x00\x05\x00\x02\x01x"  # TXT between them
    opts = [b"\x00\x00\x29" + struct.pack(">H", size) + b"\x00" * 6 for size in sizes[:count]]
    additional = b"".join(opts[:1] + [record] * others + opts[1:])
    data = header(ar=count + others) + WEB + QUESTION_TAIL + additional
    check(data, expect_rcode=fuzz.FORMERR)


@pytest.mark.parametrize(("name", "data", "rcode"), [
    ("pointer loop", header() + b"\xc0\x0c" + QUESTION_TAIL, fuzz.FORMERR),
    ("two-pointer loop", header() + b"\x01a\xc0\x0e\xc0\x0c" + QUESTION_TAIL, fuzz.FORMERR),
    ("forward pointer", header() + b"\x03web\xc0\x16" + QUESTION_TAIL + b"\x07cluster\x05local\x00",
     fuzz.FORMERR),
    ("label of 64", header() + b"\x40" + b"a" * 64 + b"\x00" + QUESTION_TAIL, fuzz.FORMERR),
    ("QDCOUNT 0", header(qd=0), fuzz.FORMERR),
    ("QDCOUNT 2", header(qd=2) + (WEB + QUESTION_TAIL) * 2, fuzz.FORMERR),
    ("OPT RDLENGTH past the end",
     header(ar=1) + WEB + QUESTION_TAIL + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x09\x00\x0a",
     fuzz.FORMERR),
    ("OPT owner not root", header(ar=1) + WEB + QUESTION_TAIL + b"\x01x\x00\x00\x29" + b"\x00" * 8,
     fuzz.FORMERR),
    ("EDNS version 1", header(ar=1) + WEB + QUESTION_TAIL + b"\x00\x00\x29\x10\x00\x00\x01"
     + b"\x00" * 4, fuzz.BADVERS),
    ("class CHAOS", header() + WEB + b"\x00\x10\x00\x03", fuzz.REFUSED),
    ("opcode STATUS", header(flags=0x1000) + WEB + QUESTION_TAIL, fuzz.NOTIMP),
])
def test_hostile_shapes(name: str, data: bytes, rcode: int) -> None:
    check(data, expect_rcode=rcode)
    check(data, tcp=True, expect_rcode=rcode)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00",
                                  header(flags=0x8100) + WEB + QUESTION_TAIL])
def test_no_reply_without_a_header_or_to_a_response(data: bytes) -> None:
    assert HANDLER.handle(data, False, fuzz.CLIENT) is None


# -- the real server: a burst of garbage, then a good query ----------------------------------


@pytest.fixture(scope="module")
def fuzz_server(dns_server: StartServer, tmp_path_factory: pytest.TempPathFactory
                ) -> RunningServer:
    folder = fuzz.write_manifests(tmp_path_factory.mktemp("fuzz-manifests"))
    return dns_server(folder, "--tcp-idle-timeout", "3")


def _good_query_answered(server: RunningServer) -> None:
    for tcp in (False, True):
        reply = server.query("kubernetes.default.svc.cluster.local", "A", tcp=tcp)
        assert [rrset.to_text() for rrset in reply.answer] == [
            "kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"]


def test_real_server_survives_a_burst_of_garbage(fuzz_server: RunningServer) -> None:
    """2,000 UDP datagrams and 30 TCP connections of generated cases; every reply checked."""
    _good_query_answered(fuzz_server)
    failures = fuzz.Failures()
    generated = fuzz.cases(11, NAMES)
    udp_cases = [c for _, c in zip(range(2_000), generated, strict=False)]
    deadline = time.monotonic() + 60
    with fuzz_server.udp_socket() as sock:
        for case in udp_cases:
            assert time.monotonic() < deadline, "the UDP burst took over 60 s"
            sock.send(case.data)
            if len(case.data) >= 12 and not case.data[2] & 0x80:
                _check_wire(failures, case, sock.recv(65535), tcp=False)
        sock.setblocking(False)
        time.sleep(0.2)
        with pytest.raises(BlockingIOError):  # nothing was answered that should not have been
            sock.recv(65535)
    CHECKER.cases += len(udp_cases)
    _good_query_answered(fuzz_server)

    for connection in range(30):
        batch = [c for _, c in zip(range(40), generated, strict=False) if c.data]
        with fuzz_server.tcp_socket() as sock:
            sock.sendall(b"".join(struct.pack(">H", len(c.data)) + c.data for c in batch))
            if connection % 3 == 0:  # and then broken framing: a length with too little after
                sock.sendall(b"\xff\xff" + random.Random(connection).randbytes(100))
            for case in batch:
                if len(case.data) >= 12 and not case.data[2] & 0x80:
                    (length,) = struct.unpack(">H", read_exact(sock, 2))
                    _check_wire(failures, case, read_exact(sock, length), tcp=True)
        CHECKER.cases += len(batch)
    _good_query_answered(fuzz_server)
    fuzz_server.read_output()
    assert fuzz_server.process.poll() is None
    assert not [line for line in fuzz_server.output if "Traceback" in line], fuzz_server.output
    if failures.first:
        pytest.fail(_summary(failures), pytrace=False)


def _check_wire(failures: fuzz.Failures, case: fuzz.Case, reply: bytes, *, tcp: bool) -> None:
    try:
        fuzz.check_reply(case.data, reply, tcp, expect_rcode=case.expect_rcode, valid=case.valid)
    except fuzz.PropertyFailed as failure:
        failures.add(failure)


def test_at_least_100000_cases() -> None:
    assert CHECKER.cases >= MIN_CASES, CHECKER.cases
