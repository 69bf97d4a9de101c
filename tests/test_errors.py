"""``errors``: forwarding's failures are logged, one line each or consolidated (CoreDNS's
plugin/errors), and nothing is logged for them without the plugin."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from livecluster import ServerProcess, answer_of, eventually
from upstream import closed_port

from dnsserver.config import corefile
from dnsserver.plugins.errors import Consolidate, ErrorLog, ErrorsOptions, go_duration

EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"
LINE = re.compile(r"2 www\.example\.org\. A: udp 127\.0\.0\.1:\d+: \S")


def _serve(tmp_path: Path, errors: str, port: int) -> ServerProcess:
    path = tmp_path / "Corefile"
    path.write_text(f".:53 {{\n  kubernetes cluster.local\n{errors}"
                    f"  forward . 127.0.0.1:{port}\n}}\n")
    return ServerProcess(["--corefile", str(path), "--manifests", str(EXAMPLE)])


def test_a_failed_forward_is_one_error_line(tmp_path: Path) -> None:
    with closed_port() as port:
        proc = _serve(tmp_path, "  errors\n", port)
        try:
            assert answer_of(proc.port, "www.example.org")[0] == "SERVFAIL"
            eventually(lambda: _has(LINE, proc.text()))
        finally:
            proc.stop()


def test_without_errors_nothing_is_logged_for_it(tmp_path: Path) -> None:
    with closed_port() as port:
        proc = _serve(tmp_path, "", port)
        try:
            assert answer_of(proc.port, "www.example.org")[0] == "SERVFAIL"
            assert answer_of(proc.port, "kubernetes.default.svc.cluster.local")[0] == "NOERROR"
        finally:
            proc.stop()
        assert not LINE.search(proc.text())


def test_consolidate_counts_matching_errors_and_logs_them_once(tmp_path: Path) -> None:
    with closed_port() as port:
        proc = _serve(tmp_path, '  errors {\n    consolidate 1s "^udp .*" warning\n  }\n', port)
        try:
            for _ in range(3):
                assert answer_of(proc.port, "www.example.org")[0] == "SERVFAIL"
            eventually(lambda: _expect(_consolidated(proc.text()), 3))
            assert not LINE.search(proc.text())
        finally:
            proc.stop()


def _consolidated(text: str) -> int:
    """The errors counted by the consolidated lines so far (each 1s window logs its own)."""
    found = re.findall(r"WARNING\] dnsserver\.errors: (\d+) errors like '\^udp \.\*' "
                       r"occurred in last 1s", text)
    return sum(int(count) for count in found)


def _expect(actual: object, expected: object) -> None:
    assert actual == expected


def _has(pattern: re.Pattern[str], text: str) -> None:
    assert pattern.search(text), text


@pytest.mark.parametrize(("seconds", "text"), [
    (30, "30s"), (1.5, "1.5s"), (300, "5m0s"), (90, "1m30s"), (3600, "1h0m0s")])
def test_durations_print_as_go_prints_them(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_the_first_matching_pattern_counts_and_the_timer_is_armed_once() -> None:
    timers: list[float] = []
    log = ErrorLog(ErrorsOptions((Consolidate(5, "timeout"), Consolidate(5, "."))),
                   later=lambda delay, _: timers.append(delay))
    for _ in range(4):
        log.report(2, "a.example.", "A", "udp 10.0.0.1:53: i/o timeout")
    assert timers == [5]
    assert log._counts == [4, 0]


@pytest.mark.parametrize(("text", "message"), [
    ("errors /var/log/x", "Corefile:3: errors: invalid log file '/var/log/x' (only stdout)"),
    ("errors {\n consolidate 5m\n }", "Corefile:4: errors consolidate: expected 2 to 3 "
     "arguments, got 1"),
    ("errors {\n consolidate 1m a fatal\n }", "Corefile:4: errors consolidate: unknown log "
     "level 'fatal' (one of error, warning, info, debug)"),
    ("errors {\n show_first\n }", "Corefile:4: errors: unknown option 'show_first'"),
])
def test_errors_options_refused(text: str, message: str) -> None:
    with pytest.raises(corefile.CorefileError) as caught:
        corefile.parse(f".:53 {{\n  kubernetes cluster.local\n  {text}\n}}\n")
    assert str(caught.value) == message
