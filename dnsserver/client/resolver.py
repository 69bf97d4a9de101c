"""A stub resolver that walks the search list exactly as glibc or musl does (SPEC §3).

``resolve(name, qtype, config)`` returns a :class:`Resolution`: the final answer (status,
rcode, records, the name that answered) and every query sent on the way, in order. It exists
to show what a pod's libc asks the cluster DNS server, and to test that the server's
NXDOMAIN/NODATA/SERVFAIL answers keep those searches short and correct.

Two stubs, each a transcription of its C source (cited per function):

- **glibc** (``getaddrinfo``/``res_search``): ``__res_context_search`` in ``resolv/res_query.c``
  (glibc ``05dec22d``) for the search walk, ``__res_context_query`` for the verdict of one
  step (an A+AAAA step succeeds if either reply has answers), ``send_dg`` in
  ``resolv/res_send.c`` for the transport (SERVFAIL, NOTIMP and REFUSED replies are set aside
  and the query goes to the next server, then the next attempt).
- **musl** (``getaddrinfo``): ``name_from_dns_search`` and ``name_from_dns`` in
  ``src/network/lookup_name.c`` (SPEC cites ``86373b49`` lines 143-232) for the walk,
  ``__res_msend_rc`` in ``src/network/res_msend.c`` for the transport, which accepts only
  NOERROR and NXDOMAIN replies: a SERVFAIL is re-sent at once, anything else (REFUSED) is
  ignored, and an unanswered query costs the whole timeout and ends as ``EAI_AGAIN``.
  For other qtypes musl's ``res_search`` is ``res_query`` (``weak_alias(res_query,
  res_search)`` in ``src/network/res_query.c``): no search list at all.

dnspython does the wire work (building queries, parsing replies). Not modelled: IP literals
and ``/etc/hosts`` (both libcs answer those before DNS), glibc's switch to
``single-request`` after a partial timeout, per-server timeout scaling (``retrans << ns``),
``rotate``, EDNS and the ``LOCALDOMAIN``/``RES_OPTIONS`` variables.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset

from dnsserver.config import resolvconf

Mode = Literal["glibc", "musl"]
MODES: tuple[Mode, ...] = ("glibc", "musl")
ADDR = ("A", "AAAA")  # what getaddrinfo(AF_UNSPEC) asks, in the order both libcs send it
MAX_NDOTS = 15  # glibc RES_MAXNDOTS; musl resolvconf.c caps at 15 too
MAX_NAMESERVERS = 3  # MAXNS in both
LIMITS: dict[Mode, tuple[int, float]] = {  # (attempts, timeout) caps
    "glibc": (5, 30.0),  # RES_MAXRETRY, RES_MAXRETRANS (resolv/res_init.c)
    "musl": (10, 60.0),  # src/network/resolvconf.c
}
_REJECTED = (dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED)  # send_dg: try next server
_ACCEPTED_BY_MUSL = (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)  # __res_msend_rc's switch
_MAX_MESSAGE = 65535


class ResolvConfError(ValueError):
    """The resolv.conf text or the resolver settings cannot be used."""


@dataclass(frozen=True, slots=True)
class ResolverConfig:
    """What a stub resolver reads from resolv.conf; ``ndots`` is capped at 15.

    ``nameservers`` carry ports (resolv.conf has none: 53 unless given). ``timeout`` is per
    round in seconds and may be a fraction (resolv.conf only allows whole seconds), so tests
    of musl's wait-out-the-timeout behaviour stay fast.
    """

    nameservers: tuple[tuple[str, int], ...] = (("127.0.0.1", 53),)
    search: tuple[str, ...] = ()
    ndots: int = 1
    mode: Mode = "glibc"
    timeout: float = 5.0
    attempts: int = 2
    use_tcp: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ResolvConfError(f"mode {self.mode!r} is not glibc or musl")
        if not self.nameservers:
            raise ResolvConfError("no nameserver")
        if self.timeout <= 0 or self.attempts < 1 or self.ndots < 0:
            raise ResolvConfError("timeout and attempts must be positive, ndots not negative")
        max_attempts, max_timeout = LIMITS[self.mode]
        # Frozen, so normalise through object.__setattr__: the caps every libc applies.
        object.__setattr__(self, "ndots", min(self.ndots, MAX_NDOTS))
        object.__setattr__(self, "attempts", min(self.attempts, max_attempts))
        object.__setattr__(self, "timeout", min(self.timeout, max_timeout))
        object.__setattr__(self, "nameservers", tuple(self.nameservers[:MAX_NAMESERVERS]))
        object.__setattr__(self, "search", tuple(self.search))

    @classmethod
    def for_pod(
        cls,
        namespace: str = "default",
        zone: str = "cluster.local",
        *,
        nameservers: Sequence[tuple[str, int]] = (("127.0.0.1", 53),),
        host_search: Sequence[str] = (),
        ndots: int = 5,
        mode: Mode = "glibc",
        timeout: float = 5.0,
        attempts: int = 2,
        use_tcp: bool = False,
    ) -> ResolverConfig:
        """What kubelet writes for ``dnsPolicy: ClusterFirst`` (SPEC §3.1): the pod's
        namespace, ``svc`` and the zone, then the node's search domains, duplicates removed."""
        zone = zone.strip(".")
        search = [f"{namespace}.svc.{zone}", f"svc.{zone}", zone, *host_search]
        return cls(
            nameservers=tuple(nameservers), search=tuple(dict.fromkeys(search)), ndots=ndots,
            mode=mode, timeout=timeout, attempts=attempts, use_tcp=use_tcp,
        )

    @classmethod
    def from_resolv_conf(
        cls, text: str, *, mode: Mode = "glibc", port: int = 53
    ) -> ResolverConfig:
        """Parse resolv.conf text with :func:`dnsserver.config.resolvconf.parse` (glibc's rules).

        ``nameserver`` lines (the first 3 are used), ``search``/``domain`` (the last wins),
        ``options ndots: timeout: attempts: use-vc``. Without a nameserver, 127.0.0.1, as
        both libcs do. A nameserver may carry a port (``127.0.0.1:5353``, ``[::1]:5353``, our
        extension); otherwise ``port``. ``timeout`` and ``attempts`` are capped per ``mode``.
        """
        conf = resolvconf.parse(text)
        timeout, attempts = conf.timeout, conf.attempts
        for option in conf.options:  # re-read: musl's caps (60 s, 10) are above glibc's
            key, _, value = option.partition(":")
            if key == "timeout" and value.isdigit():
                timeout = max(int(value), 1)
            elif key == "attempts" and value.isdigit():
                attempts = max(int(value), 1)
        nameservers = []
        for line in text.splitlines():  # again, for the default port (parse() assumes 53)
            words = line.split()
            if len(words) > 1 and words[0] == "nameserver":
                with contextlib.suppress(resolvconf.UpstreamError):  # skipped, as by glibc
                    upstream = resolvconf.parse_upstream(words[1], default_port=port)
                    nameservers.append((upstream.host, upstream.port))
        return cls(
            nameservers=tuple(nameservers) or (("127.0.0.1", port),), search=conf.search,
            ndots=conf.ndots, mode=mode, timeout=float(timeout), attempts=attempts,
            use_tcp=any(o in ("use-vc", "usevc") for o in conf.options),
        )

    def describe(self) -> str:
        servers = ", ".join(_format_server(s) for s in self.nameservers)
        return (f"{self.mode} stub, search [{' '.join(self.search)}], ndots {self.ndots}, "
                f"nameserver {servers} ({'tcp' if self.use_tcp else 'udp'}), "
                f"timeout {self.timeout:g}s x {self.attempts} attempts")


def _format_server(server: tuple[str, int]) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """One query sent, and what came back: ``rcode`` None means no reply arrived in time."""

    name: str  # absolute, as sent
    qtype: str
    rcode: str | None
    answers: int  # records in the answer section
    server: str
    tcp: bool = False
    ignored: bool = False  # the stub set this reply aside (glibc: try next; musl: wait on)
    error: str = ""  # "timeout", "connection refused", ...

    def __str__(self) -> str:
        outcome = self.rcode or self.error or "no reply"
        extras = (" tcp" if self.tcp else "") + (" ignored" if self.ignored else "")
        return f"{self.name} {self.qtype} {outcome} {self.answers}{extras}"


@dataclass(frozen=True, slots=True)
class Step:
    """One name tried: the queries it took and the libc's verdict on it.

    ``result`` is "OK", a glibc ``h_errno`` (HOST_NOT_FOUND, NO_DATA, TRY_AGAIN,
    NO_RECOVERY, or ECONNREFUSED: no server reachable, which ends the lookup as TRY_AGAIN),
    or a musl code (NOT_FOUND for ``name_from_dns`` returning 0, EAI_NODATA, EAI_AGAIN,
    EAI_FAIL, EAI_NONAME).
    """

    name: str
    queries: tuple[Query, ...]
    result: str
    rcode: str | None  # the rcode the verdict came from; None without an accepted reply
    records: tuple[dns.rrset.RRset, ...] = ()

    @property
    def ok(self) -> bool:
        return self.result == "OK"


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of one lookup, and every query it sent in order."""

    question: str
    qtypes: tuple[str, ...]
    config: ResolverConfig
    steps: tuple[Step, ...]
    status: str  # "OK", or the libc's error (h_errno name for glibc, EAI_* for musl)
    rcode: str | None  # of the deciding reply; None when no reply was accepted
    name: str | None  # the name that answered; None without an answer
    records: tuple[dns.rrset.RRset, ...]

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    @property
    def queries(self) -> tuple[Query, ...]:
        return tuple(query for step in self.steps for query in step.queries)

    @property
    def addresses(self) -> list[str]:
        """A and AAAA data of the answer, in reply order (CNAME targets chased in-zone)."""
        return [
            rdata.to_text() for rrset in self.records
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for rdata in rrset
        ]

    def tried(self) -> list[str]:
        """The names tried, one per step (a quick view of the search walk)."""
        return [step.name for step in self.steps]


# -- entry point ---------------------------------------------------------------------------


def resolve(
    name: str, qtype: str | Sequence[str] = "A", config: ResolverConfig | None = None
) -> Resolution:
    """Look ``name`` up as the configured libc would.

    ``qtype`` is a type ("A", "SRV", ...), or "ADDR" / ``("A", "AAAA")`` for the pair
    ``getaddrinfo(AF_UNSPEC)`` sends. glibc searches for every qtype (``res_search``); musl
    searches only for A/AAAA (``getaddrinfo``) and sends anything else once, as given.
    """
    config = config or ResolverConfig()
    qtypes = _qtypes(qtype)
    name = name.strip()
    if not name or name.startswith(".") or ".." in name:
        raise ValueError(f"{name!r} is not a domain name")
    if config.mode == "glibc":
        return _Glibc(config, name, qtypes).search()
    return _Musl(config, name, qtypes).search()


def _qtypes(qtype: str | Sequence[str]) -> tuple[str, ...]:
    qtypes: tuple[str, ...]
    if isinstance(qtype, str):
        qtypes = ADDR if qtype.upper() == "ADDR" else (qtype,)
    else:
        qtypes = tuple(qtype)
    try:
        qtypes = tuple(dns.rdatatype.to_text(dns.rdatatype.from_text(t)) for t in qtypes)
    except dns.rdatatype.UnknownRdatatype:
        raise ValueError(f"unknown query type in {qtype!r}") from None
    if not 1 <= len(qtypes) <= 2 or (len(qtypes) == 2 and qtypes != ADDR):
        raise ValueError("a query pair can only be A+AAAA (what getaddrinfo sends)")
    return qtypes


def absolute_name(name: str, domain: str | None = None) -> str:
    """``name`` (plus ``domain``) as an absolute name, checked by dnspython."""
    text = name if domain is None else f"{name.rstrip('.')}.{domain}"
    return dns.name.from_text(text).to_text()


# -- the wire ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Sent:
    """A query sent, mutable until its reply (or the deadline) comes."""

    message: dns.message.Message
    server: tuple[str, int]
    tcp: bool = False
    reply: dns.message.Message | None = None
    ignored: bool = False
    error: str = ""

    def freeze(self) -> Query:
        question = self.message.question[0]
        reply = self.reply
        return Query(
            name=question.name.to_text(),
            qtype=dns.rdatatype.to_text(question.rdtype),
            rcode=dns.rcode.to_text(reply.rcode()) if reply is not None else None,
            answers=_answer_count(reply), server=_format_server(self.server), tcp=self.tcp,
            ignored=self.ignored, error=self.error or ("" if reply is not None else "timeout"),
        )


def _answer_count(reply: dns.message.Message | None) -> int:
    return 0 if reply is None else sum(len(rrset) for rrset in reply.answer)


def _make_query(name: str, qtype: str) -> dns.message.Message:
    return dns.message.make_query(name, qtype)  # RD set, no EDNS: what both libcs send


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _parse(data: bytes) -> dns.message.Message | None:
    try:
        return dns.message.from_wire(data)
    except (dns.exception.DNSException, ValueError):
        return None  # not a DNS message: both libcs drop it and keep waiting


def _tcp_exchange(sent: _Sent, timeout: float) -> None:
    host, port = sent.server
    try:
        sent.reply = dns.query.tcp(sent.message, host, timeout=timeout, port=port)
    except dns.exception.Timeout:
        sent.error = "timeout"
    except ConnectionRefusedError:
        sent.error = "connection refused"
    except (OSError, EOFError, dns.exception.DNSException) as exc:
        sent.error = f"tcp error: {exc}"


def _truncated(reply: dns.message.Message) -> bool:
    return bool(reply.flags & dns.flags.TC)


@contextlib.contextmanager
def _udp_socket(host: str) -> Iterator[socket.socket]:
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()


def _wait_readable(sock: socket.socket, deadline: float) -> bool:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    readable, _, _ = select.select([sock], [], [], remaining)
    return bool(readable)


# -- glibc ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _GlibcRound:
    """``send_dg`` to one server: the replies it kept, and what ``hp->rcode`` ends up as."""

    sent: list[_Sent] = field(default_factory=list)
    accepted: list[dns.message.Message] = field(default_factory=list)
    first_rcode: int | None = None  # the first reply lands in the answer buffer (hp)
    got_somewhere: bool = False  # a reply or a timeout; only refusals leave it False


class _Search:
    """One lookup of ``name`` for ``qtypes``: the steps a libc's search takes."""

    def __init__(self, config: ResolverConfig, name: str, qtypes: tuple[str, ...]) -> None:
        self.config = config
        self.name = name
        self.qtypes = qtypes
        self.steps: list[Step] = []


class _Glibc(_Search):
    """glibc's ``__res_context_search`` over ``__res_context_query`` and ``send_dg``."""

    def search(self) -> Resolution:
        """``__res_context_search`` (res_query.c:329-524 at 05dec22d), step by step.

        - L348-353: count the dots; note a trailing dot.
        - L368-390: ``dots >= ndots`` or a trailing dot → the name as-is first; an answer, or
          any result with a trailing dot, ends the search. Its error is kept (saved_herrno).
        - L398-486: the search list (RES_DEFNAMES and RES_DNSRCH are on by default). An
          answer ends it. ECONNREFUSED returns TRY_AGAIN at once (L456-459). NO_DATA
          (counted) and HOST_NOT_FOUND go on; TRY_AGAIN goes on only if ``hp->rcode`` is
          SERVFAIL (counted); anything else (NO_RECOVERY, a REFUSED, a timeout) stops the
          walk but not the lookup (L461-478). A "." entry means root_on_list (L418-421).
        - L492-501: as-is last, unless tried first or the root was on the list.
        - L517-522, the error returned: the as-is-first one, else NO_DATA if any step had
          it, else TRY_AGAIN if any SERVFAIL, else the last one.
        """
        name, config = self.name, self.config
        dots = name.count(".")
        trailing_dot = name.endswith(".")
        saved: Step | None = None
        got_nodata: Step | None = None
        got_servfail: Step | None = None
        root_on_list = False
        if dots >= config.ndots or trailing_dot:
            step = self._query(name, None)
            if step.ok or trailing_dot:
                return self._result(step)
            saved = step
        if dots == 0 or not trailing_dot:  # (!dots && DEFNAMES) || (dots && !trailing && DNSRCH)
            for entry in config.search:
                domain = entry[1:] if entry.startswith(".") else entry
                root_on_list = root_on_list or domain == ""
                step = self._query(name, domain)
                if step.ok:
                    return self._result(step)
                if step.result == "ECONNREFUSED":
                    return self._result(step, status="TRY_AGAIN")
                if step.result == "NO_DATA":
                    got_nodata = got_nodata or step
                elif step.result == "HOST_NOT_FOUND":
                    pass
                elif step.result == "TRY_AGAIN" and step.rcode == "SERVFAIL":
                    got_servfail = got_servfail or step
                else:
                    break
        if not (saved is not None or root_on_list):
            step = self._query(name, None)
            if step.ok:
                return self._result(step)
        final = saved or got_nodata or got_servfail or self.steps[-1]
        status = "TRY_AGAIN" if final.result == "ECONNREFUSED" else final.result
        return self._result(final, status=status)

    def _result(self, step: Step, status: str | None = None) -> Resolution:
        if step.ok and self.qtypes[0] in ADDR and not _has_address(step.records):
            # Any answer ends res_search, but getaddrinfo needs an address: a bare CNAME
            # (an ExternalName to an outside name) comes back as HOST_NOT_FOUND (EAI_NONAME).
            status = "HOST_NOT_FOUND"
        ok = (status or step.result) == "OK"
        return Resolution(
            question=self.name, qtypes=self.qtypes, config=self.config, steps=tuple(self.steps),
            status=status or step.result, rcode=step.rcode,
            name=step.name if ok else None, records=step.records if ok else (),
        )

    def _query(self, name: str, domain: str | None) -> Step:
        """``__res_context_querydomain`` + ``__res_context_query`` (res_query.c:105-275).

        The verdict (L238-272): success if either reply is NOERROR with answers. Otherwise
        the rcode that counts is the second reply's if the first is NOERROR, else the
        first's: NXDOMAIN → HOST_NOT_FOUND, SERVFAIL → TRY_AGAIN, NOERROR → NO_DATA,
        anything else → NO_RECOVERY. No reply kept by ``send_dg`` → TRY_AGAIN (L210-213).
        """
        try:
            qname = absolute_name(name, domain)
        except dns.exception.DNSException:  # too long, empty label: res_mkquery fails
            return self._add(Step(f"{name}.{domain or ''}", (), "NO_RECOVERY", None))
        sent, accepted, first_rcode, refused = self._send([_make_query(qname, t)
                                                           for t in self.qtypes])
        queries = tuple(s.freeze() for s in sent)
        if not accepted:
            if refused:
                return self._add(Step(qname, queries, "ECONNREFUSED", None))
            rcode = None if first_rcode is None else dns.rcode.to_text(dns.rcode.Rcode(first_rcode))
            return self._add(Step(qname, queries, "TRY_AGAIN", rcode))
        hp = accepted[0]
        hp2 = accepted[1] if len(accepted) > 1 else hp
        for reply in (hp, hp2):
            if reply.rcode() == dns.rcode.NOERROR and reply.answer:
                records = tuple(rrset for r in accepted for rrset in r.answer)
                return self._add(Step(qname, queries, "OK", "NOERROR", records))
        counted = hp2.rcode() if hp.rcode() == dns.rcode.NOERROR else hp.rcode()
        result = {dns.rcode.NXDOMAIN: "HOST_NOT_FOUND", dns.rcode.SERVFAIL: "TRY_AGAIN",
                  dns.rcode.NOERROR: "NO_DATA"}.get(counted, "NO_RECOVERY")
        return self._add(Step(qname, queries, result, dns.rcode.to_text(counted)))

    def _add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    def _send(
        self, messages: list[dns.message.Message]
    ) -> tuple[list[_Sent], list[dns.message.Message], int | None, bool]:
        """``__libc_res_nsend`` (res_send.c): ``attempts`` rounds over every server.

        Returns what was sent, the replies kept, ``hp->rcode`` of the last round, and
        whether every round ended in ECONNREFUSED (no server "got somewhere").
        """
        config = self.config
        sent: list[_Sent] = []
        got_somewhere = False
        first_rcode: int | None = None
        for _ in range(1 if config.use_tcp else config.attempts):  # use-vc: one try a server
            for server in config.nameservers:
                round_ = self._round_tcp(server, messages) if config.use_tcp else \
                    self._round_udp(server, messages)
                sent += round_.sent
                got_somewhere = got_somewhere or round_.got_somewhere
                if round_.accepted:
                    return sent, round_.accepted, None, False
                first_rcode = round_.first_rcode
        return sent, [], first_rcode, not got_somewhere

    def _round_udp(self, server: tuple[str, int], messages: list[dns.message.Message]) -> \
            _GlibcRound:
        """``send_dg``: both queries at once on a socket connected to the server.

        A SERVFAIL, NOTIMP or REFUSED reply is set aside and the other one awaited; if no
        reply is kept the round fails and the next server (then attempt) is tried. A
        NOERROR reply without answers, AA, RA and additional records is a referral: next
        server. TC=1 repeats the round over TCP (``v_circuit``). ECONNREFUSED ends the round.
        """
        round_ = _GlibcRound([_Sent(m, server) for m in messages])
        pending = dict(enumerate(round_.sent))
        host, port = server
        with _udp_socket(host) as sock:
            try:
                sock.connect((host, port))
                for item in round_.sent:
                    sock.send(item.message.to_wire())
                deadline = time.monotonic() + self.config.timeout
                while pending:
                    if not _wait_readable(sock, deadline):
                        round_.got_somewhere = True  # a timeout: "no answer obtained"
                        break
                    reply = _parse(sock.recv(_MAX_MESSAGE))
                    index = _match(pending, reply)
                    if reply is None or index is None:
                        continue
                    item = pending.pop(index)
                    item.reply = reply
                    round_.got_somewhere = True
                    if round_.first_rcode is None:
                        round_.first_rcode = reply.rcode()
                    if reply.rcode() in _REJECTED:
                        item.ignored = True
                        continue
                    if _is_referral(reply):
                        item.ignored = True
                        round_.accepted.clear()
                        return round_
                    if _truncated(reply):
                        return self._round_tcp(server, messages, before=round_.sent)
                    round_.accepted.append(reply)
            except ConnectionRefusedError:
                for item in pending.values():
                    item.error = "connection refused"
                round_.accepted.clear()
        return round_

    def _round_tcp(
        self, server: tuple[str, int], messages: list[dns.message.Message],
        before: Sequence[_Sent] = (),
    ) -> _GlibcRound:
        """``send_vc``: the queries one after another over TCP, same rules for replies."""
        round_ = _GlibcRound(list(before))
        for message in messages:
            item = _Sent(message, server, tcp=True)
            round_.sent.append(item)
            _tcp_exchange(item, self.config.timeout)
            if item.reply is None:
                round_.got_somewhere = round_.got_somewhere or item.error != "connection refused"
                continue
            round_.got_somewhere = True
            if round_.first_rcode is None:
                round_.first_rcode = item.reply.rcode()
            if item.reply.rcode() in _REJECTED:
                item.ignored = True
            else:
                round_.accepted.append(item.reply)
        return round_


def _has_address(records: Sequence[dns.rrset.RRset]) -> bool:
    return any(rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for rrset in records)


def _match(pending: dict[int, _Sent], reply: dns.message.Message | None) -> int | None:
    if reply is None:
        return None
    for index, item in pending.items():
        if item.message.is_response(reply):
            return index
    return None


def _is_referral(reply: dns.message.Message) -> bool:
    flags = reply.flags
    return (reply.rcode() == dns.rcode.NOERROR and not reply.answer and not reply.additional
            and not flags & dns.flags.AA and not flags & dns.flags.RA)


# -- musl ----------------------------------------------------------------------------------


class _Musl(_Search):
    """musl's ``name_from_dns_search`` over ``name_from_dns`` and ``__res_msend_rc``."""

    def search(self) -> Resolution:
        """``name_from_dns_search`` (lookup_name.c, SPEC: lines 143-232 at 86373b49).

        - ``dots >= ndots`` or a trailing dot: the search list is dropped, NO search at all.
        - Each search domain that fits in 255 octets: ``name_from_dns``; any non-zero
          result (addresses, EAI_NODATA, EAI_AGAIN, EAI_FAIL) ends the lookup. Only 0, "no
          such name", goes on.
        - Then the name as-is; a final 0 becomes EAI_NONAME (``__lookup_name``).

        For a qtype other than A/AAAA, musl's ``res_search`` is ``res_query``: one query.
        """
        if self.qtypes[0] not in ADDR:
            return self._res_query()
        name = self.name
        dots = name.count(".")
        search = () if dots >= self.config.ndots or name.endswith(".") else self.config.search
        base = name[:-1] if name.endswith(".") else name
        for domain in search:
            if len(domain) < 256 - len(base) - 1:
                step = self._name_from_dns(base, domain)
                if step.result != "NOT_FOUND":
                    return self._result(step)
        step = self._name_from_dns(name, None)
        return self._result(step, status="EAI_NONAME" if step.result == "NOT_FOUND" else None)

    def _result(self, step: Step, status: str | None = None) -> Resolution:
        return Resolution(
            question=self.name, qtypes=self.qtypes, config=self.config, steps=tuple(self.steps),
            status=status or step.result, rcode=step.rcode,
            name=step.name if step.ok else None, records=step.records if step.ok else (),
        )

    def _name_from_dns(self, name: str, domain: str | None) -> Step:
        """``name_from_dns`` (lookup_name.c; the per-reply loop is SPEC's lines 174-178).

        For each reply in query order (A, then AAAA): none, short or SERVFAIL → EAI_AGAIN;
        NXDOMAIN → 0 (so a NXDOMAIN on *either* member makes the step "not found", even when
        the other had addresses); any other non-zero rcode → EAI_FAIL. Then the A and AAAA
        records of both answers are counted: none → EAI_NODATA (musl 1.2.4+; EAI_NONAME
        before), which stops the search like an address would.
        """
        try:
            qname = absolute_name(name, domain)
        except dns.exception.DNSException:  # __res_mkquery fails: EAI_NONAME, stops
            return self._add(Step(f"{name}.{domain or ''}", (), "EAI_NONAME", None))
        sent, replies = self._msend([_make_query(qname, t) for t in self.qtypes])
        queries = tuple(s.freeze() for s in sent)
        for reply in replies:
            if reply is None or reply.rcode() == dns.rcode.SERVFAIL:
                rcode = None if reply is None else "SERVFAIL"
                return self._add(Step(qname, queries, "EAI_AGAIN", rcode))
            if reply.rcode() == dns.rcode.NXDOMAIN:
                return self._add(Step(qname, queries, "NOT_FOUND", "NXDOMAIN"))
            if reply.rcode() != dns.rcode.NOERROR:
                return self._add(Step(qname, queries, "EAI_FAIL",
                                      dns.rcode.to_text(reply.rcode())))
        answered = cast(list[dns.message.Message], replies)
        records = tuple(rrset for reply in answered for rrset in reply.answer)
        if _has_address(records):
            return self._add(Step(qname, queries, "OK", "NOERROR", records))
        return self._add(Step(qname, queries, "EAI_NODATA", "NOERROR"))

    def _res_query(self) -> Resolution:
        """``res_query`` (src/network/res_query.c): no reply → TRY_AGAIN, NXDOMAIN →
        HOST_NOT_FOUND, NOERROR without answers → NO_DATA, anything else is the answer."""
        qname = absolute_name(self.name)
        sent, (reply,) = self._msend([_make_query(qname, self.qtypes[0])])
        queries = tuple(s.freeze() for s in sent)
        if reply is None:
            step = Step(qname, queries, "TRY_AGAIN", None)
        elif reply.rcode() == dns.rcode.NXDOMAIN:
            step = Step(qname, queries, "HOST_NOT_FOUND", "NXDOMAIN")
        elif reply.rcode() == dns.rcode.NOERROR and not reply.answer:
            step = Step(qname, queries, "NO_DATA", "NOERROR")
        else:
            step = Step(qname, queries, "OK", dns.rcode.to_text(reply.rcode()),
                        tuple(reply.answer))
        return self._result(self._add(step))

    def _add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    def _msend(
        self, messages: list[dns.message.Message]
    ) -> tuple[list[_Sent], list[dns.message.Message | None]]:
        """``__res_msend_rc`` (res_msend.c): every query to every server at once.

        Unanswered queries are re-sent every ``timeout / attempts``; the whole exchange ends
        at ``timeout``. Only NOERROR and NXDOMAIN replies are kept. A SERVFAIL is re-sent
        to that server at once (at most twice per query per round); any other rcode
        (REFUSED, FORMERR, NOTIMP) is ignored, so such a query waits out the full timeout.
        """
        if self.config.use_tcp:  # musl has no use-vc; this is a debugging convenience
            return self._msend_tcp(messages)
        config = self.config
        answers: list[dns.message.Message | None] = [None] * len(messages)
        sent: list[_Sent] = []
        interval = config.timeout / config.attempts
        start = time.monotonic()
        sockets: dict[socket.AddressFamily, socket.socket] = {}
        with contextlib.ExitStack() as stack:
            for host, _ in config.nameservers:
                if _family(host) not in sockets:
                    sockets[_family(host)] = stack.enter_context(_udp_socket(host))

            def send(index: int, server: tuple[str, int]) -> None:
                item = _Sent(messages[index], server)
                sent.append(item)
                with contextlib.suppress(OSError):  # musl ignores sendto errors
                    sockets[_family(server[0])].sendto(messages[index].to_wire(), server)

            for round_number in range(config.attempts):
                for index in range(len(messages)):
                    if answers[index] is None:
                        for server in config.nameservers:
                            send(index, server)
                servfail_retry = 2 * len(messages)
                deadline = start + interval * (round_number + 1)
                while any(a is None for a in answers):
                    readable = _select(list(sockets.values()), deadline)
                    if not readable:
                        break
                    for sock in readable:
                        data, address = _recv(sock)
                        reply = _parse(data) if data else None
                        item = _waiting(sent, reply, address, config.nameservers)
                        if reply is None or item is None:
                            continue
                        index = next(i for i, m in enumerate(messages) if m is item.message)
                        if answers[index] is not None:
                            continue
                        item.reply = reply
                        if reply.rcode() in _ACCEPTED_BY_MUSL:
                            answers[index] = reply
                            if _truncated(reply):  # musl 1.2.4+: retry this one over TCP
                                answers[index] = self._tcp_retry(item, sent)
                            continue
                        item.ignored = True
                        if reply.rcode() == dns.rcode.SERVFAIL and servfail_retry:
                            servfail_retry -= 1
                            send(index, item.server)
                if all(a is not None for a in answers):
                    break
        return sent, answers

    def _tcp_retry(self, item: _Sent, sent: list[_Sent]) -> dns.message.Message | None:
        retry = _Sent(item.message, item.server, tcp=True)
        sent.append(retry)
        _tcp_exchange(retry, self.config.timeout)
        if retry.reply is not None and retry.reply.rcode() in _ACCEPTED_BY_MUSL:
            return retry.reply
        retry.ignored = retry.reply is not None
        return None

    def _msend_tcp(
        self, messages: list[dns.message.Message]
    ) -> tuple[list[_Sent], list[dns.message.Message | None]]:
        sent: list[_Sent] = []
        answers: list[dns.message.Message | None] = []
        for message in messages:
            answer = None
            for server in self.config.nameservers:
                item = _Sent(message, server, tcp=True)
                sent.append(item)
                _tcp_exchange(item, self.config.timeout)
                if item.reply is not None and item.reply.rcode() in _ACCEPTED_BY_MUSL:
                    answer = item.reply
                    break
                item.ignored = item.reply is not None
            answers.append(answer)
        return sent, answers


def _select(sockets: list[socket.socket], deadline: float) -> list[socket.socket]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return []
    readable, _, _ = select.select(sockets, [], [], remaining)
    return readable


def _recv(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    try:
        data, address = sock.recvfrom(_MAX_MESSAGE)
    except (BlockingIOError, ConnectionRefusedError):
        return b"", ("", 0)
    return data, (address[0], address[1])


def _waiting(
    sent: list[_Sent], reply: dns.message.Message | None, address: tuple[str, int],
    servers: Sequence[tuple[str, int]],
) -> _Sent | None:
    """The oldest query still waiting that ``reply`` answers, from a server we asked."""
    if reply is None or address not in servers:
        return None  # "Ignore replies from addresses we didn't send to"
    for item in sent:
        if item.reply is None and item.server == address and item.message.is_response(reply):
            return item
    return None
