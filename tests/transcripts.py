#!/usr/bin/env python3
"""Replays the shell sessions written in the Markdown documents against the demo's Envoy,
and checks that each command still answers what the document says.

Usage (from the repository root, after ``./build.sh``)::

    .venv/bin/python tests/transcripts.py                      # README.md and docs/*.md
    .venv/bin/python tests/transcripts.py README.md docs/control-api.md  # these, in order
    .venv/bin/python tests/transcripts.py --regenerate [FILES] # rewrite expected output

``tests/test_docs.py`` runs the same replay under pytest (``./test.sh``).

How a session is written
------------------------
A fenced code block (any info string, or none) with a line starting with ``$ `` is a
session. Each ``$ `` line is a command (a line ending in ``\\`` continues on the next); the
lines after it, up to the next ``$ `` line or the end of the block, are its expected
output: stdout and stderr together, as a terminal shows them. Blank lines at the end of a
command's output are separators, and trailing whitespace is not compared. A command must
exit with status 0, unless its output ends with a line ``[exit N]`` giving the status it
exits with (so a ``curl --data @missing.json ... >/dev/null`` cannot pass unseen).

Commands run in ``bash -c`` (the documents' sessions use curl), in a working directory of
their own per document, against the demo's Envoy: ``envoy/demo.yaml`` as ``./demo.sh`` runs
it (2 workers, its upstream ``scripts/upstream.py``), but on free ports. Every ``localhost:<port>`` or
``127.0.0.1:<port>`` naming one of demo.yaml's ports (listener 10000, outbound proxy 10001,
admin 9901, upstream 8080) is pointed at the port actually used, and the actual port is
written back as the documented one in the output. Shell state (variables, ``cd``) does not
carry from one command to the next; the filter's state does.

The documents are replayed as a reader types them: every session of every document, in
order, against ONE demo started once for the whole run. The order is README.md first, then
the pages of README's "Where to go next" table in the table's order, then any other
``docs/*.md`` page in name order. Nothing is sent between two sessions: a page whose
sessions need a clean start shows the command that gives it (``curl -s -X DELETE
localhost:10000/injector``, ``curl -s localhost:8080/__reset``), and a page that makes
the upstream fail turns it back before it ends. So a page's answers depend on the pages
before it, as they would in a reader's terminal.

Placeholders in expected output
-------------------------------
- ``[..]``: any text within one line (possibly none).
- ``...`` alone on a line: any number of lines (possibly none).
- ``[DATE]``: an HTTP date, ``Wed, 25 Nov 2026 18:13:51 GMT``.
- ``[NUM]``: a number, ``7`` or ``0.252348``.
- ``[NUM>=A]``, ``[NUM<B]``, ``[NUM>=A<B]``: a number in that range, e.g. ``200
  [NUM>=0.25<1]s`` for a request delayed by 250 ms, as curl's ``%{time_total}`` prints it.

Markers (an HTML comment on the line right before the fence, blank lines allowed between)
-----------------------------------------------------------------------------------------
- ``<!-- transcript: skip (reason) -->``: the session is not replayed (it needs a cluster,
  docker, ...). The reason is required and shows in the replayer's summary.
- ``<!-- transcript: file NAME -->``: the block's content is written to NAME in the
  document's working directory before any of its sessions runs, so a command can use it
  (``curl --data @policy.json``).

``--regenerate`` replays, then rewrites each command's expected output from what it
answered, keeping an expected line wherever it still matches (so placeholders that still
hold stay), and leaves skipped blocks alone. Review the diff before committing it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml  # PyYAML, installed in .venv by scripts/setup.sh

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import REPO_ROOT, SHIPPED_ENVOY_ENVIRONMENT, envoy_binary, free_port, request, start_upstream, wasm_module_path  # noqa: E402

DEMO_CONFIG = REPO_ROOT / "envoy" / "demo.yaml"
COMMAND_TIMEOUT = 20.0
PROMPT = "$ "

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_MARKER = re.compile(r"^\s*<!--\s*transcript:\s*(skip|file)\b\s*(.*?)\s*-->\s*$")
_PLACEHOLDER = re.compile(r"\[\.\.\]|\[DATE\]|\[NUM(?:>=([0-9.]+))?(?:<([0-9.]+))?\]")
_DATE = r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT"
_NUM = r"-?\d+(?:\.\d+)?"
_EXIT = re.compile(r"\[exit (\d+)\]")


_TABLE_LINK = re.compile(r"^\|.*\]\((docs/[^)#\s]+\.md)\)")


def default_documents(root: Path = REPO_ROOT) -> list[Path]:
    """README.md and every docs/*.md, the documents whose sessions are replayed, in the
    order a reader meets them: README.md, the docs/ pages of its "Where to go next" table
    in the table's order, then the docs/ pages the table does not name, by name."""
    readme = root / "README.md"
    pages = sorted((root / "docs").glob("*.md"))
    table: list[Path] = []
    if readme.is_file():
        for line in readme.read_text().split("\n"):
            found = _TABLE_LINK.match(line)
            page = root / found.group(1) if found else None
            if page is not None and page in pages and page not in table:
                table.append(page)
    docs = [readme] + table + [p for p in pages if p not in table]
    return [d for d in docs if d.is_file()]


# --------------------------------------------------------------------------- parsing


@dataclass
class Command:
    """One ``$ `` command of a session and the expected output written after it."""

    line: int  # 1-based line number of the ``$ `` line
    text: str  # the command, continuation lines joined with newlines, without the prompt
    expected: list[str]  # expected output lines, trailing blank lines and [exit N] removed
    output_start: int  # 0-based index in the document's lines of the first output line
    output_end: int  # 0-based index one past the last output line (trailing blanks excluded)
    status: int = 0  # expected exit status: 0, or N from a last output line ``[exit N]``


@dataclass
class Block:
    """A fenced code block: a session (commands), a file to write, or a skipped session."""

    line: int  # 1-based line number of the opening fence
    content: list[str]
    commands: list[Command] = field(default_factory=list)
    skip_reason: str | None = None
    file_name: str | None = None

    @property
    def is_session(self) -> bool:
        return bool(self.commands)


class DocumentError(ValueError):
    """A document breaks the session conventions (named by file and line)."""


@dataclass
class Document:
    path: Path
    lines: list[str]
    blocks: list[Block]

    @property
    def name(self) -> str:
        try:
            return str(self.path.resolve().relative_to(REPO_ROOT))
        except ValueError:
            return str(self.path)

    @property
    def sessions(self) -> list[Block]:
        return [b for b in self.blocks if b.is_session and b.skip_reason is None]

    @property
    def skipped(self) -> list[Block]:
        return [b for b in self.blocks if b.is_session and b.skip_reason is not None]

    @property
    def files(self) -> list[Block]:
        return [b for b in self.blocks if b.file_name is not None]


def parse(path: Path, text: str | None = None) -> Document:
    """The document's fenced blocks, with their sessions and markers."""
    if text is None:
        text = path.read_text()
    lines = text.split("\n")
    blocks: list[Block] = []
    marker: tuple[str, str, int] | None = None  # (kind, argument, line) awaiting its fence
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        found = _MARKER.match(lines[i])
        if found:
            marker = (found.group(1), found.group(2), i + 1)
            i += 1
            continue
        if not fence:
            if lines[i].strip() and marker is not None:
                raise DocumentError(f"{path}:{marker[2]}: transcript marker not followed by a code block")
            i += 1
            continue
        ticks = fence.group(1)
        start = i
        i += 1
        while i < len(lines) and not re.match(rf"^ {{0,3}}{ticks[0]}{{{len(ticks)},}}\s*$", lines[i]):
            i += 1
        block = Block(line=start + 1, content=lines[start + 1 : i])
        _parse_session(path, block, start + 1)
        if marker is not None:
            kind, arg, mline = marker
            if kind == "skip":
                if not arg:
                    raise DocumentError(f"{path}:{mline}: 'transcript: skip' needs a reason")
                if not block.is_session:
                    raise DocumentError(f"{path}:{mline}: 'transcript: skip' before a block with no $ command")
                block.skip_reason = arg
            else:
                if not re.fullmatch(r"[\w.-]+", arg or ""):
                    raise DocumentError(f"{path}:{mline}: 'transcript: file' needs a plain file name, got {arg!r}")
                block.file_name = arg
            marker = None
        blocks.append(block)
        i += 1
    if marker is not None:
        raise DocumentError(f"{path}:{marker[2]}: transcript marker not followed by a code block")
    return Document(path, lines, blocks)


def _parse_session(path: Path, block: Block, first_index: int) -> None:
    """Splits a block's lines into commands if it is a session (first_index: 0-based index
    of the block's first content line in the document)."""
    if not any(line.startswith(PROMPT) for line in block.content):
        return
    j = 0
    content = block.content
    while j < len(content) and not content[j].strip():
        j += 1
    if j < len(content) and not content[j].startswith(PROMPT):
        raise DocumentError(f"{path}:{first_index + j + 1}: a session must start with a '$ ' command line")
    while j < len(content):
        line_no = first_index + j + 1
        parts = [content[j][len(PROMPT):]]
        while parts[-1].endswith("\\") and j + 1 < len(content):
            j += 1
            parts.append(content[j])
        j += 1
        out_start = j
        while j < len(content) and not content[j].startswith(PROMPT):
            j += 1
        out_end = j
        while out_end > out_start and not content[out_end - 1].strip():
            out_end -= 1
        expected = [line.rstrip() for line in content[out_start:out_end]]
        status = 0
        if expected and _EXIT.fullmatch(expected[-1]):
            status = int(_EXIT.fullmatch(expected.pop()).group(1))
        block.commands.append(
            Command(
                line=line_no,
                text="\n".join(parts),
                expected=expected,
                output_start=first_index + out_start,
                output_end=first_index + out_end,
                status=status,
            )
        )


# --------------------------------------------------------------------------- matching


def line_matches(pattern: str, actual: str) -> bool:
    """Whether one actual line matches one expected line, placeholders included."""
    if pattern == actual:
        return True
    regex: list[str] = []
    bounds: list[tuple[float | None, float | None]] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(pattern):
        regex.append(re.escape(pattern[pos : m.start()]))
        token = m.group(0)
        if token == "[..]":
            regex.append(".*?")
        elif token == "[DATE]":
            regex.append(_DATE)
        else:
            regex.append(f"({_NUM})")
            low, high = m.group(1), m.group(2)
            bounds.append((float(low) if low else None, float(high) if high else None))
        pos = m.end()
    if not regex:
        return False
    regex.append(re.escape(pattern[pos:]))
    found = re.fullmatch("".join(regex), actual)
    if not found:
        return False
    for value, (low, high) in zip(found.groups(), bounds):
        number = float(value)
        if (low is not None and number < low) or (high is not None and number >= high):
            return False
    return True


ELLIPSIS = "..."


def align(expected: Sequence[str], actual: Sequence[str]) -> list[tuple[int | None, int | None]]:
    """The cheapest alignment of expected lines to actual lines, as (expected index or
    None, actual index or None) pairs in order. A pair of two indexes whose lines do not
    match is a changed line; a ``...`` line pairs with each actual line it stands for
    (or with None when it stands for none). Empty list of mismatches means they match."""
    n, m = len(expected), len(actual)
    if n == m and all(line_matches(e, a) for e, a in zip(expected, actual)):
        return [(i, i) for i in range(n)]  # the usual case, without the quadratic search
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    cost[n][m] = 0
    for i in range(n, -1, -1):
        for j in range(m, -1, -1):
            if i == n and j == m:
                continue
            best = inf
            if i < n and expected[i] == ELLIPSIS:
                best = cost[i + 1][j]
                if j < m:
                    best = min(best, cost[i][j + 1])
            else:
                if i < n and j < m:
                    same = line_matches(expected[i], actual[j])
                    best = cost[i + 1][j + 1] + (0 if same else 1)
                if i < n:
                    best = min(best, cost[i + 1][j] + 1)
                if j < m:
                    best = min(best, cost[i][j + 1] + 1)
            cost[i][j] = best
    pairs: list[tuple[int | None, int | None]] = []
    i = j = 0
    while i < n or j < m:
        if i < n and expected[i] == ELLIPSIS:
            if j < m and cost[i][j] == cost[i][j + 1]:
                pairs.append((i, j))
                j += 1
            else:
                if not pairs or pairs[-1][0] != i:
                    pairs.append((i, None))
                i += 1
            continue
        if i < n and j < m:
            same = line_matches(expected[i], actual[j])
            if cost[i][j] == cost[i + 1][j + 1] + (0 if same else 1):
                pairs.append((i, j))
                i += 1
                j += 1
                continue
        if i < n and cost[i][j] == cost[i + 1][j] + 1:
            pairs.append((i, None))
            i += 1
        else:
            pairs.append((None, j))
            j += 1
    return pairs


def mismatches(expected: Sequence[str], actual: Sequence[str]) -> list[tuple[int | None, int | None]]:
    """The pairs of `align` that are differences (empty: the output matches)."""
    out = []
    for i, j in align(expected, actual):
        if i is not None and expected[i] == ELLIPSIS:
            continue
        if i is None or j is None or not line_matches(expected[i], actual[j]):
            out.append((i, j))
    return out


def regenerated(expected: Sequence[str], actual: Sequence[str]) -> list[str]:
    """New expected output: the old line where it still matches (placeholders kept), the
    actual line elsewhere; a ``...`` stays once where it was."""
    out: list[str] = []
    kept_ellipsis = None
    for i, j in align(expected, actual):
        if i is not None and expected[i] == ELLIPSIS:
            if kept_ellipsis != i:
                out.append(ELLIPSIS)
                kept_ellipsis = i
        elif i is not None and j is not None and line_matches(expected[i], actual[j]):
            out.append(expected[i])
        elif j is not None:
            out.append(actual[j])
    return out


# --------------------------------------------------------------------------- running


@dataclass
class Result:
    """What one command answered."""

    command: Command
    output: list[str]
    returncode: int


class Demo:
    """envoy/demo.yaml as ./demo.sh runs it (``envoy -c demo.yaml --concurrency 2`` with
    ``EVENT_PRECISE_TIMER=1`` in its environment, and scripts/upstream.py), with every port
    moved to a free one. ``ports`` maps each port demo.yaml names to the one in use.

    It starts Envoy itself rather than through harness.Envoy, which renders a bootstrap of
    its own: the point here is to run the demo's configuration as it is written.
    """

    def __init__(self, config: Path = DEMO_CONFIG):
        self.config = yaml.safe_load(config.read_text())
        self.upstream = None
        self.proc: subprocess.Popen | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="transcripts-envoy-"))
        self.log_path = self.workdir / "envoy.log"
        self.ports: dict[int, int] = {}

    @property
    def listener_port(self) -> int:
        """The port in use of demo.yaml's first listener (the one with /injector)."""
        return self.ports[_port(self.config["static_resources"]["listeners"][0])]

    def start(self, attempts: int = 3) -> "Demo":
        try:
            self.upstream = start_upstream()
            for attempt in range(attempts):
                self._launch()
                problem = self._wait_ready()
                if problem is None:
                    return self
                self._kill()
                log = self.log_path.read_text(errors="replace")
                if "Address already in use" not in log or attempt + 1 == attempts:
                    tail = "\n".join(log.splitlines()[-40:])
                    raise RuntimeError(f"demo envoy {problem}; last lines of {self.log_path}:\n{tail}")
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        demo = copy.deepcopy(self.config)
        ports: dict[int, int] = {}
        for listener in demo["static_resources"]["listeners"]:
            ports[_port(listener)] = free_port()
        ports[_port(demo["admin"])] = free_port()
        for cluster in demo["static_resources"]["clusters"]:
            for group in cluster["load_assignment"]["endpoints"]:
                for endpoint in group["lb_endpoints"]:
                    ports[_port(endpoint["endpoint"])] = self.upstream.port
        _move(demo, ports, str(wasm_module_path()))
        self.ports = ports
        bootstrap = self.workdir / "demo.json"
        bootstrap.write_text(json.dumps(demo, indent=2))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [envoy_binary(), "-c", str(bootstrap), "--concurrency", "2", "--disable-hot-restart",
                 "--log-level", "info"],
                cwd=self.workdir,
                env={**os.environ, **SHIPPED_ENVOY_ENVIRONMENT},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )

    def _wait_ready(self, timeout: float = 20.0) -> str | None:
        """None once admin /ready says LIVE and every listener accepts; else what went wrong."""
        admin = self.ports[_port(self.config["admin"])]
        listeners = [self.ports[_port(l)] for l in self.config["static_resources"]["listeners"]]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with code {self.proc.returncode} during start"
            try:
                status, _, body = request(admin, "/ready", timeout=1)
                if status == 200 and body.strip() == b"LIVE" and all(_accepts(p) for p in listeners):
                    return None
            except OSError:
                pass
            time.sleep(0.05)
        return f"not ready within {timeout:g} s"

    def _kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(5)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        self._kill()
        if self.upstream is not None:
            self.upstream.stop()
            self.upstream = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Demo":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def rewrite(self, command: str) -> str:
        """The command with demo.yaml's ports replaced by the ones in use."""
        return _swap_ports(command, self.ports)

    def unrewrite(self, output: str) -> str:
        """The output with the ports in use written as demo.yaml's."""
        return _swap_ports(output, {v: k for k, v in self.ports.items()})

    def run(self, command: Command, cwd: Path) -> Result:
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        try:
            proc = subprocess.run(
                ["bash", "-c", self.rewrite(command.text)],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=COMMAND_TIMEOUT,
            )
            text, code = proc.stdout.decode("utf-8", "replace"), proc.returncode
        except subprocess.TimeoutExpired as e:
            text = (e.output or b"").decode("utf-8", "replace") + f"\n[timed out after {COMMAND_TIMEOUT:g} s]"
            code = -1
        return Result(command, output_lines(self.unrewrite(text)), code)


def output_lines(text: str) -> list[str]:
    """Output as the document writes it: lines without CR or trailing whitespace (which
    editors strip), trailing blank lines dropped."""
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _port(holder: dict) -> int:
    return holder["address"]["socket_address"]["port_value"]


def _move(node, ports: dict[int, int], module: str) -> None:
    """Points every socket address at its port in use, and the Wasm module at `module`
    (demo.yaml names it relative to the repository root; Envoy runs elsewhere)."""
    if isinstance(node, dict):
        if "port_value" in node and node["port_value"] in ports:
            node["port_value"] = ports[node["port_value"]]
        if "local" in node and isinstance(node["local"], dict) and "filename" in node["local"]:
            node["local"]["filename"] = module
        for value in node.values():
            _move(value, ports, module)
    elif isinstance(node, list):
        for value in node:
            _move(value, ports, module)


def _swap_ports(text: str, ports: dict[int, int]) -> str:
    if not ports:
        return text
    alternatives = "|".join(str(p) for p in sorted(ports, reverse=True))
    pattern = re.compile(rf"\b(localhost|127\.0\.0\.1):({alternatives})\b")
    return pattern.sub(lambda m: f"{m.group(1)}:{ports[int(m.group(2))]}", text)


def replay(document: Document, demo: Demo) -> list[Result]:
    """Runs every session of the document that is not skipped, in order, against `demo`
    as the earlier commands (of this document and of those replayed before it) left it:
    nothing is reset between sessions. Returns what each command answered."""
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="transcripts-") as tmp:
        cwd = Path(tmp)
        for block in document.files:
            (cwd / block.file_name).write_text("\n".join(block.content) + "\n")
        for block in document.sessions:
            for command in block.commands:
                results.append(demo.run(command, cwd))
    return results


def replay_all(documents: Sequence[Document]) -> list[tuple[Document, list[Result]]]:
    """Replays the documents in the order given against one demo started once, as a
    reader types them page after page; returns each document with its answers."""
    if not any(d.sessions for d in documents):
        return [(d, []) for d in documents]
    with Demo() as demo:
        return [(d, replay(d, demo)) for d in documents]


# --------------------------------------------------------------------------- checking


def report(document: Document, results: Sequence[Result]) -> list[str]:
    """One entry per command whose output differs from the document: file:line of the
    command, then each differing line as expected (-) and got (+) with the document line
    it concerns (for a line the document lacks: the line it would go before)."""
    problems = []
    for result in results:
        command = result.command
        diffs = mismatches(command.expected, result.output)
        if not diffs and result.returncode == command.status:
            continue
        lines = [f"{document.name}:{command.line}: output of `{command.text}` differs (- expected, + got):"]
        for i, j in diffs:
            if i is not None:
                position = i
            else:
                position = next((a for a, _ in _later(command, result, j) if a is not None), len(command.expected))
            where = f"{document.name}:{command.output_start + position + 1}"
            if i is not None:
                lines.append(f"  {where}: - {command.expected[i]}")
            if j is not None:
                lines.append(f"  {where}: + {result.output[j]}")
        if result.returncode != command.status:
            where = f"{document.name}:{command.output_start + len(command.expected) + 1}"
            lines.append(f"  {where}: - [exit {command.status}]")
            lines.append(f"  {where}: + [exit {result.returncode}]")
        problems.append("\n".join(lines))
    return problems


def _later(command: Command, result: Result, j: int) -> list[tuple[int | None, int | None]]:
    """The alignment pairs after the one holding actual line j."""
    pairs = align(command.expected, result.output)
    at = next(k for k, (_, b) in enumerate(pairs) if b == j)
    return pairs[at + 1 :]


def regenerate(document: Document, results: Sequence[Result]) -> str:
    """The document's text with each replayed command's expected output rewritten."""
    lines = list(document.lines)
    for result in sorted(results, key=lambda r: r.command.output_start, reverse=True):
        command = result.command
        new = regenerated(command.expected, result.output)
        if result.returncode != 0:
            new.append(f"[exit {result.returncode}]")
        lines[command.output_start : command.output_end] = new
    return "\n".join(lines)


def check(paths: Sequence[Path], write: bool = False, out=sys.stdout) -> int:
    """Replays the documents in the order given, against one demo; prints a summary and
    every difference. Returns the number of commands whose output differs (rewriting
    them, with `write`). Give the documents a page needs before it too: a page's answers
    depend on what the pages before it left in force."""
    documents = [parse(p) for p in paths]
    failed = 0
    for document, results in replay_all(documents):
        problems = report(document, results)
        commands = sum(len(b.commands) for b in document.sessions)
        print(
            f"{document.name}: {len(document.sessions)} sessions, {commands} commands replayed, "
            f"{len(problems)} differ; {len(document.skipped)} sessions skipped",
            file=out,
        )
        for block in document.skipped:
            print(f"  skipped {document.name}:{block.line}: {block.skip_reason}", file=out)
        for problem in problems:
            print(problem, file=out)
        if write and problems:
            document.path.write_text(regenerate(document, results))
            print(f"  rewrote {document.name}", file=out)
        failed += len(problems)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regenerate", action="store_true", help="rewrite expected output from the real answers")
    parser.add_argument("files", nargs="*", type=Path, help="Markdown documents (default: README.md, docs/*.md)")
    args = parser.parse_args(argv)
    paths = args.files or default_documents()
    try:
        failed = check(paths, write=args.regenerate)
    except DocumentError as e:
        print(f"transcripts: {e}", file=sys.stderr)
        return 2
    return 0 if failed == 0 or args.regenerate else 1


if __name__ == "__main__":
    sys.exit(main())
