"""Read a CoreDNS Corefile into a :class:`~dnsserver.config.settings.Config`.

The grammar is CoreDNS's (a Caddyfile of server blocks)::

    # a comment, to the end of the line
    (common) {                     # a snippet, pasted by "import common"
        errors
    }
    .:53 {                         # a server block: ZONE[:PORT]..., port 53 by default
        import common              # a snippet, or files (relative to this file, one "*")
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure          # a plugin's options: one per line
        }
        forward . {$UPSTREAM}      # {$NAME} and {%NAME%} are environment variables
    }

Tokens are separated by white space; "double quotes" keep white space (``\\"`` inside);
an unquoted ``{$NAME}`` that is empty or unset is left out (with a warning when unset).
A directive's arguments are the tokens on its line, and a ``{`` ending that line opens its
block of options.

Which block is which: the block using ``kubernetes`` is the main one (exactly one must);
its port is where we listen (on 0.0.0.0 unless ``bind`` says otherwise). Any other block
on the same port is a stub domain: its ``forward`` (and ``cache``) serve its zones.
A ``forward ZONE …`` line in the main block is a stub domain too; ``forward . …`` is the
upstream of everything else.

Errors start with ``path:line:``. Unknown plugins and options, and plugins or options this
server does not implement, are errors; with ``lenient=True`` they become warnings and are
left out. Options accepted but without effect here (``prefetch``, ``consolidate`` …) are
always warnings. :func:`parse` and :func:`load` log the warnings;
:func:`parse_with_warnings` and :func:`load_with_warnings` return them.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from dnsserver.config import directives
from dnsserver.config.directives import (
    BadValue,
    Conflict,
    CorefileError,
    CorefileSyntaxError,
    CorefileWarning,
    Directive,
    ParseContext,
    Token,
    UnknownOption,
    UnknownPlugin,
    Unsupported,
)
from dnsserver.config.settings import (
    ROOT_ZONE,
    Config,
    ConfigError,
    HealthConfig,
    LogConfig,
    ReloadConfig,
    StubDomain,
    name_in_zone,
)
from dnsserver.plugins import (
    autopath,
    bind,
    errors,
    health,
    hosts,
    kubernetes,
    loadbalance,
    loop,
    reload,
    rewrite,
    template,
)
from dnsserver.plugins import cache as cache_plugin
from dnsserver.plugins import forward as forward_plugin
from dnsserver.plugins import log as query_log
from dnsserver.plugins.cache import CacheConfig
from dnsserver.plugins.chain import PluginOptions
from dnsserver.plugins.errors import ErrorsOptions
from dnsserver.plugins.forward import ForwardConfig
from dnsserver.plugins.kubernetes import KubernetesOptions
from zones.model import PodsMode

log = logging.getLogger("dnsserver.corefile")

DEFAULT_PORT = 53
MAX_IMPORTS = 100


@dataclass(frozen=True, slots=True)
class Parsed:
    config: Config
    warnings: tuple[CorefileWarning, ...]


# -- the API -------------------------------------------------------------------------------

def parse(text: str, *, path: str = "Corefile", lenient: bool = False,
          env: Mapping[str, str] | None = None) -> Config:
    """The Config of Corefile ``text``; warnings are logged. ``path`` names it in messages
    and anchors relative imports; ``env`` replaces ``os.environ`` for ``{$NAME}``."""
    parsed = parse_with_warnings(text, path=path, lenient=lenient, env=env)
    _log_warnings(parsed.warnings)
    return parsed.config


def load(path: str | Path, lenient: bool = False,
         env: Mapping[str, str] | None = None) -> Config:
    """The Config of the Corefile at ``path`` (``config.corefile`` is set); warnings logged."""
    parsed = load_with_warnings(path, lenient=lenient, env=env)
    _log_warnings(parsed.warnings)
    return parsed.config


def parse_with_warnings(text: str, *, path: str = "Corefile", lenient: bool = False,
                        env: Mapping[str, str] | None = None) -> Parsed:
    warnings: list[CorefileWarning] = []
    environment = os.environ if env is None else env
    reader = _Reader(_tokenize(text, path, environment, warnings), environment, warnings)
    blocks = _read_blocks(reader)
    config = _Builder(path, lenient=lenient, warnings=warnings).build(blocks)
    return Parsed(config, tuple(warnings))


def load_with_warnings(path: str | Path, *, lenient: bool = False,
                       env: Mapping[str, str] | None = None) -> Parsed:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read the Corefile: {reason}") from exc
    parsed = parse_with_warnings(text, path=str(path), lenient=lenient, env=env)
    return Parsed(replace(parsed.config, corefile=Path(path)), parsed.warnings)


def _log_warnings(warnings: tuple[CorefileWarning, ...]) -> None:
    for warning in warnings:
        log.warning("%s", warning)


# -- tokens --------------------------------------------------------------------------------

_ENV_REFERENCE = re.compile(r"\{\$([^{}$]+)\}|\{%([^{}%]+)%\}")


def _tokenize(text: str, file: str, env: Mapping[str, str],
              warnings: list[CorefileWarning]) -> list[Token]:
    """Split ``text`` into tokens with their lines (CoreDNS's lexer: a ``#`` outside quotes
    starts a comment even inside a word)."""
    text = text.removeprefix("\ufeff")
    tokens: list[Token] = []
    position, line, end = 0, 1, len(text)
    while position < end:
        char = text[position]
        if char == "\n":
            line += 1
            position += 1
        elif char.isspace():
            position += 1
        elif char == "#":
            newline = text.find("\n", position)
            position = end if newline < 0 else newline
        elif char == '"':
            start_line, chars = line, []
            position += 1
            while True:
                if position >= end:
                    raise CorefileSyntaxError(file, start_line, "a quoted string is never closed")
                char = text[position]
                if char == "\\" and text.startswith('"', position + 1):
                    chars.append('"')
                    position += 2
                    continue
                position += 1
                if char == '"':
                    break
                if char == "\n":
                    line += 1
                chars.append(char)
            value = _expand_env("".join(chars), env, file, start_line, warnings)
            tokens.append(Token(value, file, start_line, line, quoted=True))
        else:
            start = position
            while position < end and not text[position].isspace() and text[position] != "#":
                position += 1
            value = _expand_env(text[start:position], env, file, line, warnings)
            if value:  # an unquoted variable that is empty is no argument at all
                tokens.append(Token(value, file, line, line))
    return tokens


def _expand_env(text: str, env: Mapping[str, str], file: str, line: int,
                warnings: list[CorefileWarning]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            warnings.append(CorefileWarning(
                file, line, f"environment variable {name} is not set; using ''"))
        return env.get(name, "")

    return _ENV_REFERENCE.sub(value, text)


class _Reader:
    """A cursor over the tokens that pastes snippets and files in place of ``import``."""

    def __init__(self, tokens: list[Token], env: Mapping[str, str],
                 warnings: list[CorefileWarning]) -> None:
        self.tokens = tokens
        self.position = 0
        self.snippets: dict[str, list[Token]] = {}
        self.imports = 0
        self._env = env
        self._warnings = warnings

    def peek(self) -> Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> Token:
        token = self.tokens[self.position]
        self.position += 1
        return token

    @staticmethod
    def same_line(before: Token, after: Token) -> bool:
        return before.file == after.file and before.end_line == after.line

    def expand_imports(self) -> None:
        """Where a server block or a directive starts, replace ``import X`` by what X names."""
        while (token := self.peek()) is not None and token.text == "import" and not token.quoted:
            self._import()

    def define_snippet(self, name: Token, opening: Token) -> None:
        """Keep the tokens up to the ``}`` that matches ``opening`` (already taken)."""
        if name.text in self.snippets:
            raise Conflict.at(name, f"snippet ({name.text}) is defined twice")
        depth = 1
        body: list[Token] = []
        while (token := self.peek()) is not None:
            self.take()
            depth += token.opens - token.closes
            if depth == 0:
                self.snippets[name.text] = body
                return
            body.append(token)
        raise CorefileSyntaxError.at(opening, "'{' is never closed")

    def _import(self) -> None:
        keyword = self.take()
        target = self.peek()
        if target is None or not self.same_line(keyword, target) or target.is_brace:
            raise BadValue.at(keyword, "import: expected a snippet name or a file pattern")
        self.take()
        extra = self.peek()
        if extra is not None and self.same_line(target, extra) and not extra.closes:
            raise BadValue.at(extra, "import: takes one argument")
        self.imports += 1
        if self.imports > MAX_IMPORTS:
            raise CorefileSyntaxError.at(
                keyword, f"import: more than {MAX_IMPORTS} imports (does a snippet import itself?)")
        pasted = self.snippets.get(target.text)
        if pasted is None:
            pasted = self._import_files(target)
        self.position -= 2
        self.tokens[self.position:self.position + 2] = pasted

    def _import_files(self, target: Token) -> list[Token]:
        pattern = target.text
        base = Path(target.file).parent
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        if pattern.count("*") > 1 or "?" in pattern or "[" in pattern:
            raise BadValue.at(target, f"import: {pattern!r} may hold one '*' and no other wildcard")
        if "*" in pattern:
            matches = sorted(glob.glob(full))
            if not matches:
                self._warnings.append(CorefileWarning(
                    target.file, target.line, f"import: no file matches {pattern!r}"))
        elif os.path.isfile(full):
            matches = [full]
        else:
            raise BadValue.at(target, f"import: no snippet or file named {pattern!r}")
        pasted: list[Token] = []
        for match in matches:
            try:
                text = Path(match).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise BadValue.at(target, f"import: cannot read {match}: {exc}") from exc
            pasted += _tokenize(text, match, self._env, self._warnings)
        return pasted


# -- server blocks and directives ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ServerBlock:
    keys: tuple[Token, ...]
    body: tuple[Directive, ...]


def _read_blocks(reader: _Reader) -> list[ServerBlock]:
    blocks: list[ServerBlock] = []
    while True:
        reader.expand_imports()
        first = reader.peek()
        if first is None:
            return blocks
        if first.is_brace:
            raise CorefileSyntaxError.at(
                first, f"unexpected '{first.text}': expected a server block's zones")
        keys = [reader.take()]
        while (token := reader.peek()) is not None and not token.is_brace and (
                reader.same_line(keys[-1], token) or keys[-1].text.endswith(",")):
            keys.append(reader.take())
        opening = reader.peek()
        braced = opening is not None and opening.opens and reader.same_line(keys[-1], opening)
        name = keys[0].text
        if len(keys) == 1 and len(name) > 2 and name.startswith("(") and name.endswith(")"):
            if opening is None or not braced:
                raise CorefileSyntaxError.at(keys[0], f"snippet {name} needs a '{{' block")
            reader.take()
            reader.define_snippet(replace(keys[0], text=name[1:-1]), opening)
            continue
        if opening is not None and braced:
            reader.take()
            body = _read_body(reader, opening)
        elif not blocks:  # a lone server block may leave out its braces
            body = _read_body(reader, None)
        else:
            raise CorefileSyntaxError.at(keys[-1], "expected '{' after the server block's zones")
        blocks.append(ServerBlock(tuple(keys), body))


def _read_body(reader: _Reader, opening: Token | None) -> tuple[Directive, ...]:
    """Directives up to the ``}`` matching ``opening`` (already taken), or to the end."""
    items: list[Directive] = []
    while True:
        reader.expand_imports()
        token = reader.peek()
        if token is None:
            if opening is not None:
                raise CorefileSyntaxError.at(opening, "'{' is never closed")
            return tuple(items)
        if token.closes:
            if opening is None:
                raise CorefileSyntaxError.at(token, "'}' closes nothing")
            reader.take()
            return tuple(items)
        if token.opens:
            raise CorefileSyntaxError.at(
                token, "unexpected '{': a block opens at the end of its directive's line")
        name = last = reader.take()
        args: list[Token] = []
        while (token := reader.peek()) is not None and reader.same_line(last, token) \
                and not token.is_brace:
            last = reader.take()
            args.append(last)
        body = None
        if (token := reader.peek()) is not None and token.opens and reader.same_line(last, token):
            reader.take()
            body = _read_body(reader, token)
        items.append(Directive(name, tuple(args), body))


# -- from blocks to a Config ---------------------------------------------------------------

@dataclass(slots=True)
class _Block:
    """A server block while its directives are applied."""

    first: Token
    zones: tuple[str, ...]
    port: int
    main: bool
    seen: dict[str, Token] = field(default_factory=dict)
    forwards: list[tuple[tuple[str, ...], ForwardConfig, Token]] = field(default_factory=list)
    cache: CacheConfig | None = None
    binds: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Draft:
    """The Config's Corefile-set fields while they are being filled in."""

    kubernetes: KubernetesOptions = field(default_factory=lambda: KubernetesOptions(()))
    autopath: Token | None = None
    autopath_zones: list[tuple[str, Token]] = field(default_factory=list)
    forward: ForwardConfig | None = None
    stubs: dict[str, tuple[StubDomain, Token]] = field(default_factory=dict)
    health: HealthConfig | None = None
    ready_address: str | None = None
    prometheus_address: str | None = None
    reload: ReloadConfig | None = None
    log: LogConfig | None = None
    errors: ErrorsOptions | None = None
    loadbalance: bool = False
    chain: list[PluginOptions] = field(default_factory=list)
    set_at: dict[str, Token] = field(default_factory=dict)  # process-wide plugin → its line


_Handler = Callable[["_Builder", Directive, _Block], None]
# The chain's plugins, each parsed by its own module (None: left out, in lenient mode).
CHAIN_PARSERS: dict[str, Callable[[Directive, ParseContext], PluginOptions | None]] = {
    "rewrite": rewrite.parse,
    "template": template.parse,
    "hosts": hosts.parse,
    "loop": loop.parse,
}
_SECURE_SCHEMES = ("tls://", "https://", "grpc://", "quic://", "h3://")


class _Builder:
    """Applies each directive of each server block to a :class:`_Draft`, then builds."""

    def __init__(self, path: str, *, lenient: bool, warnings: list[CorefileWarning]) -> None:
        self.path = path
        self.lenient = lenient
        self.warnings = warnings
        # Warnings and lenient refusals of the whole file (a plugin's parser gets its block's)
        self.report = ParseContext((), lenient=lenient, warnings=warnings)
        self.draft = _Draft()

    # -- reporting

    # -- blocks

    def build(self, blocks: list[ServerBlock]) -> Config:
        if not blocks:
            raise BadValue(self.path, 1,
                           "no server block (e.g. '.:53 { kubernetes cluster.local }')")
        mains = [b for b in blocks if any(d.name.text == "kubernetes" for d in b.body)]
        if not mains:
            raise Unsupported.at(blocks[0].keys[0],
                                 "no server block uses the kubernetes plugin")
        if len(mains) > 1:
            first = next(d.name for d in mains[0].body if d.name.text == "kubernetes")
            again = next(d.name for d in mains[1].body if d.name.text == "kubernetes")
            raise Conflict.at(again, "kubernetes is used in a second server block "
                              f"(first at {first.file}:{first.line}); one cluster is served")
        served: dict[tuple[str, int], Token] = {}
        main = self.block(mains[0], main=True, served=served)
        other_blocks = [b for b in blocks if b is not mains[0]]
        others = [self.block(b, main=False, served=served) for b in other_blocks]
        self.apply(mains[0], main)
        for server_block, block in zip(other_blocks, others, strict=True):
            if block.port != main.port:
                raise Unsupported.at(block.first, f"port {block.port} differs from the kubernetes "
                                     f"block's port {main.port}; one port is served")
            self.apply(server_block, block)
        self.assemble(main, others)
        return self.config(main)

    def block(self, server_block: ServerBlock, *, main: bool,
              served: dict[tuple[str, int], Token]) -> _Block:
        """The zones and port of a block's keys (``[dns://]ZONE[:PORT]``, comma or space)."""
        zones: list[str] = []
        ports: set[int] = set()
        for token in server_block.keys:
            for key in filter(None, token.text.split(",")):
                key_zones, port = self.key(token, key)
                for zone in key_zones:
                    if (zone, port) in served:
                        where = served[zone, port]
                        raise Conflict.at(token, f"duplicate zone {zone!r} on port {port} "
                                          f"(also at {where.file}:{where.line})")
                    served[zone, port] = token
                    zones.append(zone)
                ports.add(port)
        if len(ports) != 1:
            raise Unsupported.at(server_block.keys[0],
                                 f"one server block on ports {sorted(ports)}; one port is served")
        return _Block(server_block.keys[0], tuple(zones), ports.pop(), main)

    def key(self, token: Token, key: str) -> tuple[list[str], int]:
        lowered = key.lower()
        if lowered.startswith(_SECURE_SCHEMES):
            raise Unsupported.at(token, f"server block {key!r}: only plain DNS (dns://) is served")
        key = key.removeprefix("dns://").removeprefix("DNS://")
        head, sep, tail = key.rpartition(":")
        port = DEFAULT_PORT
        if sep and tail.isdigit() and not head.endswith(":"):
            port = int(tail)
            if port > 65535:
                raise BadValue.at(token, f"server block {key!r}: port {port} is out of range")
            key = head
        return list(directives.zones(replace(token, text=key or ROOT_ZONE), "server block")), port

    def apply(self, server_block: ServerBlock, block: _Block) -> None:
        for directive in server_block.body:
            name = directive.name.text
            handler = PLUGINS.get(name)
            if handler is None:
                self.report.soft(UnknownPlugin.at(directive.name, f"unknown plugin {name!r}"))
                continue
            if name in MAIN_ONLY and not block.main:
                self.report.soft(Unsupported.at(directive.name,
                                         f"{name} works only in the kubernetes server block"))
                continue
            if name not in REPEATABLE:
                if name in block.seen:
                    first = block.seen[name]
                    raise Conflict.at(directive.name, f"{name} is used twice in one server block "
                                      f"(first at {first.file}:{first.line})")
                block.seen[name] = directive.name
            handler(self, directive, block)

    def assemble(self, main: _Block, others: list[_Block]) -> None:
        """Forward lines become the upstream (``.``) or stub domains; binds must agree."""
        for zones, forward, token in main.forwards:
            for zone in zones:
                if zone != ROOT_ZONE:
                    self.stub(zone, forward, main.cache, token)
                elif self.draft.forward is not None:
                    raise Conflict.at(token, "forward: '.' is forwarded twice")
                else:
                    self.draft.forward = forward
        for block in others:
            if not block.forwards:
                self.report.soft(Unsupported.at(
                    block.first, f"server block {block.first.text!r} has no forward; besides "
                    "the kubernetes block only forwarding blocks are served"))
            for zones, forward, token in block.forwards:
                for zone in block.zones if zones == (ROOT_ZONE,) else zones:
                    self.stub(zone, forward, block.cache, token, own_block=True)
                    self.outside_cluster(zone, token)
            if block.binds and sorted(block.binds) != sorted(main.binds):
                raise Conflict.at(block.first, "bind: every server block must listen where the "
                                  "kubernetes block does")
        for zone, token in self.draft.autopath_zones:
            if not any(name_in_zone(cluster, zone) for cluster in self.draft.kubernetes.zones):
                # The search path it walks is the cluster's; another zone would never match.
                raise Unsupported.at(token, f"autopath: zone {zone!r} does not hold the "
                                     "kubernetes zone; only such zones are supported")
        if self.draft.autopath is not None and self.draft.kubernetes.pods is not PodsMode.VERIFIED:
            self.report.warn(self.draft.autopath, "autopath needs 'pods verified' in kubernetes "
                             "to know a client's namespace; without it no search path is "
                             "expanded")

    def outside_cluster(self, zone: str, token: Token) -> None:
        """A block for a cluster zone (or below) would take those names from kubernetes."""
        for cluster in self.draft.kubernetes.zones + self.draft.kubernetes.reverse_zones:
            if zone != ROOT_ZONE and name_in_zone(zone, cluster):
                raise Unsupported.at(token, f"forward: a server block for {zone!r} would take "
                                     f"names of the kubernetes zone {cluster!r}; forward them "
                                     "from the kubernetes block instead")

    def stub(self, zone: str, forward: ForwardConfig, cache: CacheConfig | None,
             token: Token, *, own_block: bool = False) -> None:
        if zone in self.draft.stubs:
            first = self.draft.stubs[zone][1]
            raise Conflict.at(token, f"forward: zone {zone!r} is forwarded twice "
                              f"(first at {first.file}:{first.line})")
        self.draft.stubs[zone] = (StubDomain(zone, forward, cache, own_block), token)

    def config(self, main: _Block) -> Config:
        draft = self.draft
        cluster = draft.kubernetes  # the Config keeps kubernetes' options as its own fields
        hosts = main.binds or ["0.0.0.0"]
        return Config(
            listen=tuple((host, main.port) for host in hosts),
            zones=cluster.zones,
            ttl=cluster.ttl,
            pods=cluster.pods,
            kubeconfig=cluster.kubeconfig,
            context=cluster.context,
            reverse_zones=cluster.reverse_zones,
            fallthrough=cluster.fallthrough,
            fallthrough_zones=cluster.fallthrough_zones,
            namespaces=cluster.namespaces,
            kube_endpoint=cluster.endpoint,
            kube_tls=cluster.tls,
            startup_timeout=cluster.startup_timeout,
            autopath=draft.autopath is not None,
            server_zones=main.zones,
            forward=draft.forward,
            stub_domains=tuple(stub for stub, _ in draft.stubs.values()),
            cache=main.cache,
            health=draft.health,
            ready_address=draft.ready_address,
            prometheus_address=draft.prometheus_address,
            log=draft.log,
            errors=draft.errors,
            reload=draft.reload,
            loadbalance=draft.loadbalance,
            chain=tuple(draft.chain),
        )

    def process_wide(self, name: str, value: object, token: Token) -> None:
        """Set a plugin that has one instance per process (health, ready …) once, or again
        with the same value from another block."""
        current = getattr(self.draft, name)
        if current is not None and current != value:
            first = self.draft.set_at[name]
            raise Conflict.at(token, f"{token.text} differs from the one at "
                              f"{first.file}:{first.line}; a process has one")
        setattr(self.draft, name, value)
        self.draft.set_at.setdefault(name, token)

    # -- values

    def context(self, block: _Block) -> ParseContext:
        """What a plugin's parser gets: the block's zones, ``--lenient``, the warnings."""
        return ParseContext(block.zones, lenient=self.lenient, warnings=self.warnings)

    # -- plugins: each parsed by its own module; here only what spans blocks

    def kubernetes(self, directive: Directive, block: _Block) -> None:
        """``kubernetes`` (:func:`dnsserver.plugins.kubernetes.parse`) fills the Config's
        cluster fields."""
        self.draft.kubernetes = kubernetes.parse(directive, self.context(block))

    def autopath(self, directive: Directive, block: _Block) -> None:
        """``autopath`` (:func:`dnsserver.plugins.autopath.parse`); its zones are checked
        against the cluster's in :meth:`assemble`."""
        options = autopath.parse(directive, self.context(block))
        self.draft.autopath_zones = list(options.zones)
        self.draft.autopath = options.directive

    def forward(self, directive: Directive, block: _Block) -> None:
        """``forward FROM TO... { … }`` (:func:`~dnsserver.plugins.forward.parse_forward`).

        The block's forward lines form one chain (CoreDNS tries them in order): every line
        carries the others, and a FROM already routed in this block adds no route of its own.
        """
        line = forward_plugin.parse_forward(directive, self.context(block))
        chain = (*block.forwards[0][1].chain, line) if block.forwards else (line,)
        block.forwards[:] = [
            (zones, replace(forward, before=chain[:len(forward.before)],
                            after=chain[len(forward.before) + 1:]), token)
            for zones, forward, token in block.forwards
        ]
        wired = replace(line, before=chain[:-1])
        shadow = wired.shadowed_by()
        if shadow is not None:
            self.report.warn(directive.name, f"forward {line.from_zone}: never used: an earlier "
                      f"forward line ({shadow.from_zone}) takes all its names first; CoreDNS "
                      "tries forward lines in order, so put sub-zones first")
        if all(line.from_zone not in zones for zones, _, _ in block.forwards):
            block.forwards.append(((line.from_zone,), wired, directive.name))

    def cache(self, directive: Directive, block: _Block) -> None:
        """``cache [TTL] [ZONES...] { … }`` (:func:`~dnsserver.plugins.cache.parse_cache`)."""
        block.cache = cache_plugin.parse_cache(directive, self.context(block))

    def health(self, directive: Directive, block: _Block) -> None:
        """``health`` (:func:`dnsserver.plugins.health.parse_health`); one per process."""
        options = health.parse_health(directive, self.context(block))
        self.process_wide("health", options, directive.name)

    def ready(self, directive: Directive, block: _Block) -> None:
        """``ready`` (:func:`dnsserver.plugins.health.parse_ready`); one per process."""
        options = health.parse_ready(directive, self.context(block))
        self.process_wide("ready_address", options.address, directive.name)

    def prometheus(self, directive: Directive, block: _Block) -> None:
        """``prometheus`` (:func:`dnsserver.plugins.health.parse_prometheus`); one per
        process."""
        options = health.parse_prometheus(directive, self.context(block))
        self.process_wide("prometheus_address", options.address, directive.name)

    def errors(self, directive: Directive, block: _Block) -> None:
        """``errors`` (:func:`dnsserver.plugins.errors.parse`); one per process, like log."""
        self.process_wide("errors", errors.parse(directive, self.context(block)), directive.name)

    def reload(self, directive: Directive, block: _Block) -> None:
        """``reload`` (:func:`dnsserver.plugins.reload.parse`); one per process."""
        self.process_wide("reload", reload.parse(directive, self.context(block)),
                          directive.name)

    def loadbalance(self, directive: Directive, block: _Block) -> None:
        """``loadbalance`` (:func:`dnsserver.plugins.loadbalance.parse`)."""
        if loadbalance.parse(directive, self.context(block)) is not None:
            self.draft.loadbalance = True

    def chained(self, directive: Directive, block: _Block) -> None:
        """A plugin of the slow path's chain: its own module parses its options."""
        options = CHAIN_PARSERS[directive.name.text](directive, self.context(block))
        if options is not None:
            self.draft.chain.append(options)

    def log(self, directive: Directive, block: _Block) -> None:
        """``log`` (:func:`dnsserver.plugins.log.parse`); blocks' log zones add up, and every
        block must log the same format and classes."""
        options = query_log.parse(directive, self.context(block))
        zones = options.zones
        current = self.draft.log
        if current is not None:
            if (current.format, current.classes) != (options.format, options.classes):
                raise Conflict.at(directive.name, "log: every server block must log the same "
                                  "format and classes")
            zones = tuple(dict.fromkeys(current.zones + zones))
        if ROOT_ZONE in zones:
            zones = (ROOT_ZONE,)
        self.draft.log = replace(options, zones=zones)

    def bind(self, directive: Directive, block: _Block) -> None:
        """``bind`` (:func:`dnsserver.plugins.bind.parse`): a block's addresses add up."""
        for host in bind.parse(directive, self.context(block)).addresses:
            if host not in block.binds:
                block.binds.append(host)


PLUGINS: dict[str, _Handler] = {
    "kubernetes": _Builder.kubernetes,
    "autopath": _Builder.autopath,
    "forward": _Builder.forward,
    "cache": _Builder.cache,
    "health": _Builder.health,
    "ready": _Builder.ready,
    "prometheus": _Builder.prometheus,
    "errors": _Builder.errors,
    "log": _Builder.log,
    "reload": _Builder.reload,
    "loadbalance": _Builder.loadbalance,
    "bind": _Builder.bind,
    **{name: _Builder.chained for name in CHAIN_PARSERS},
}
MAIN_ONLY = frozenset({"kubernetes", "autopath", "rewrite", "template", "hosts"})
REPEATABLE = frozenset({"forward", "bind", "template", "rewrite"})


# The errors are defined with the directives' grammar; callers catch them from here too.
__all__ = [
    "CHAIN_PARSERS", "DEFAULT_PORT", "MAIN_ONLY", "PLUGINS", "REPEATABLE", "BadValue",
    "Conflict", "CorefileError", "CorefileSyntaxError", "CorefileWarning", "Parsed",
    "ServerBlock", "UnknownOption", "UnknownPlugin", "Unsupported", "load",
    "load_with_warnings", "parse", "parse_with_warnings",
]
