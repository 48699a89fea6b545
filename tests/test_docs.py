"""The documents: every shell session in README.md and docs/*.md answers what it says
(replayed by tests/transcripts.py as a reader types them: page after page in the order
of README's table, against one demo's Envoy, with nothing sent between sessions), and
every relative link and #anchor in the Markdown files resolves.

After a change of behaviour, ``.venv/bin/python tests/transcripts.py --regenerate`` rewrites
the sessions from the real answers; review the diff.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import pytest

from harness import REPO_ROOT
from transcripts import (
    Demo,
    Document,
    DocumentError,
    Result,
    default_documents,
    line_matches,
    mismatches,
    parse,
    regenerate,
    regenerated,
    replay,
    replay_all,
    report,
)

# --------------------------------------------------------------------------- transcripts


DOCUMENTS = default_documents()


@functools.cache
def _replayed_all() -> dict[Path, tuple[Document, tuple[Result, ...]]]:
    """Every document and what its commands answered: all of them replayed once per run,
    in order, against one demo (a page's answers depend on the pages before it). Once per
    process: ./test.sh gives each file to one pytest-xdist worker (--dist loadfile)."""
    return {d.path: (d, tuple(r)) for d, r in replay_all([parse(p) for p in DOCUMENTS])}


def _replayed(path: Path) -> tuple[Document, tuple[Result, ...]]:
    return _replayed_all()[path]


def test_documents_are_replayed_in_the_order_of_the_readme_table():
    names = [str(p.relative_to(REPO_ROOT)) for p in DOCUMENTS]
    table = [
        link
        for line in (REPO_ROOT / "README.md").read_text().splitlines()
        if line.startswith("|")
        for link in re.findall(r"\]\((docs/[\w-]+\.md)\)", line)
    ]
    assert len(table) > 10
    assert names[: 1 + len(table)] == ["README.md", *table]
    assert sorted(names) == sorted(["README.md"] + [f"docs/{p.name}" for p in (REPO_ROOT / "docs").glob("*.md")])


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_sessions_answer_what_the_document_says(path: Path):
    document, results = _replayed(path)
    problems = report(document, results)
    assert not problems, (
        "\n".join(problems)
        + "\n\nIf the new answers are right: .venv/bin/python tests/transcripts.py --regenerate "
        + document.name
    )


def test_readme_has_sessions():
    document, results = _replayed(REPO_ROOT / "README.md")
    assert document.sessions and len(results) == sum(len(b.commands) for b in document.sessions)


def _with_results(document: Document, results: tuple[Result, ...]) -> list[Result]:
    """The answers paired with the commands of another parse of the same sessions."""
    commands = [c for b in document.sessions for c in b.commands]
    assert [c.text for c in commands] == [r.command.text for r in results]
    return [Result(c, r.output, r.returncode) for c, r in zip(commands, results)]


def test_changing_one_expected_line_of_the_readme_fails_and_regenerate_restores_it():
    path = REPO_ROOT / "README.md"
    document, results = _replayed(path)
    # The first expected line without a placeholder, changed.
    command = next(c for b in document.sessions for c in b.commands if c.expected and "[" not in c.expected[0])
    line_index = command.output_start
    lines = list(document.lines)
    original_line = lines[line_index]
    lines[line_index] = original_line + " (changed)"
    altered = parse(path, "\n".join(lines))

    problems = report(altered, _with_results(altered, results))

    assert len(problems) == 1, problems
    assert f"README.md:{command.line}: output of `{command.text}` differs" in problems[0]
    assert f"README.md:{line_index + 1}: - {original_line} (changed)" in problems[0]
    assert f"README.md:{line_index + 1}: + {original_line}" in problems[0]
    assert regenerate(altered, _with_results(altered, results)) == "\n".join(document.lines)


SAMPLE = """\
# Sample

<!-- transcript: file rule.json -->
```json
{"rules": [{"match": {"path": {"prefix": "/a"}}, "fault": {"abort": {"status": 418}}}]}
```

A block's commands share the filter's state:

```console
$ curl -s localhost:10000/hello
upstream GET /hello
$ curl -s -X POST --data @rule.json localhost:10000/injector >/dev/null
$ curl -s -o /dev/null -w '%{http_code}\\n' localhost:10000/a
418
$ curl -s -D - -o /dev/null localhost:10000/a/b \\
    | grep -i '^date'
date: [DATE]
$ curl -s -o /dev/null -w '%{http_code} %{time_total}s\\n' localhost:10000/b
200 [NUM<5]s
```

The next block goes on from there; it starts over by saying so:

```
$ curl -s -o /dev/null -w '%{http_code}\\n' localhost:10000/a
418
$ curl -s -X DELETE localhost:10000/injector >/dev/null
$ curl -s -o /dev/null -w '%{http_code}\\n' localhost:10000/a
200
$ curl -s localhost:10000/injector
{"rules":[],[..]}
$ curl -sf 'localhost:10000/injector?status=700'
[exit 22]
$ curl -si localhost:10000/x
HTTP/1.1 200 OK
...
upstream GET /x
```

<!-- transcript: skip (needs a Kubernetes cluster) -->
```sh
$ kubectl get pods
nothing here
```
"""


def test_replayer_against_the_demo(tmp_path: Path):
    path = tmp_path / "sample.md"
    path.write_text(SAMPLE)
    document = parse(path)
    assert len(document.sessions) == 2 and len(document.skipped) == 1
    assert document.skipped[0].skip_reason == "(needs a Kubernetes cluster)"
    with Demo() as demo:
        results = replay(document, demo)
    assert len(results) == 11  # the skipped session's command did not run
    assert report(document, results) == []

    # One expected line changed: reported at its line, the rest still matches.
    lines = SAMPLE.split("\n")
    index = lines.index("418")
    lines[index] = "419"
    altered = parse(path, "\n".join(lines))
    problems = report(altered, _with_results(altered, tuple(results)))
    assert len(problems) == 1, problems
    assert f"sample.md:{index + 1}: - 419" in problems[0]
    assert f"sample.md:{index + 1}: + 418" in problems[0]
    # --regenerate writes the real answer back and keeps the placeholders that hold.
    assert regenerate(altered, _with_results(altered, tuple(results))) == SAMPLE

    # A command that exits with another status than the document says is a difference.
    lines = SAMPLE.split("\n")
    lines.remove("[exit 22]")
    altered = parse(path, "\n".join(lines))
    problems = report(altered, _with_results(altered, tuple(results)))
    assert len(problems) == 1 and "+ [exit 22]" in problems[0], problems


def test_line_placeholders():
    assert line_matches("200 [NUM>=0.25]s", "200 0.252348s")
    assert not line_matches("200 [NUM>=0.25]s", "200 0.002820s")
    assert line_matches("200 [NUM<0.2]s", "200 0.002820s")
    assert not line_matches("200 [NUM<0.2]s", "200 0.3s")
    assert line_matches("[NUM>=1<2]", "1.5") and not line_matches("[NUM>=1<2]", "2")
    assert not line_matches("[NUM]", "soon")
    assert line_matches("date: [DATE]", "date: Wed, 25 Nov 2026 18:13:51 GMT")
    assert not line_matches("date: [DATE]", "date: yesterday")
    assert line_matches('{"a":[..],"b":2}', '{"a":[1, 2],"b":2}')
    assert line_matches("a[..]b", "ab")
    assert not line_matches("a[..]b", "abc")
    assert not line_matches("exact", "exact but longer")


def test_ellipsis_stands_for_any_number_of_lines():
    assert mismatches(["a", "...", "z"], ["a", "z"]) == []
    assert mismatches(["a", "...", "z"], ["a", "b", "c", "z"]) == []
    assert mismatches(["a", "...", "z"], ["a", "b", "c"]) != []
    assert mismatches(["a", "b"], ["a", "c"]) == [(1, 1)]
    assert mismatches(["a"], ["a", "extra"]) == [(None, 1)]
    assert mismatches(["a", "gone"], ["a"]) == [(1, None)]


def test_regenerated_keeps_lines_that_still_match():
    assert regenerated(["HTTP/1.1 200 OK", "...", "date: [DATE]", "x: 1"], [
        "HTTP/1.1 200 OK", "a: b", "c: d", "date: Thu, 26 Nov 2026 10:00:00 GMT", "x: 2"
    ]) == ["HTTP/1.1 200 OK", "...", "date: [DATE]", "x: 2"]
    assert regenerated(["200 [NUM>=0.25]s"], ["200 0.1s"]) == ["200 0.1s"]


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("<!-- transcript: skip -->\n```\n$ true\n```\n", 1, "needs a reason"),
        ("<!-- transcript: skip (why) -->\n```\nno command\n```\n", 1, "no $ command"),
        ("<!-- transcript: file ../x -->\n```\n{}\n```\n", 1, "plain file name"),
        ("<!-- transcript: file x.json -->\n\ntext\n", 1, "not followed by a code block"),
        ("```\noutput first\n$ true\n```\n", 2, "must start with a '$ ' command"),
    ],
)
def test_document_errors_name_the_line(tmp_path: Path, text: str, line: int, message: str):
    path = tmp_path / "bad.md"
    with pytest.raises(DocumentError, match=re.escape(message)) as err:
        parse(path, text)
    assert f"{path}:{line}:" in str(err.value)


# --------------------------------------------------------------------------- links

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
_HREF = re.compile(r"<a\s[^>]*href=[\"']([^\"']+)[\"']", re.I)
_HTML_ID = re.compile(r"<[a-z][^>]*\s(?:id|name)=[\"']([^\"']+)[\"']", re.I)
_ATX = re.compile(r"^ {0,3}#{1,6}(?:\s+(.*?))?(?:\s+#+)?\s*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files(root: Path = REPO_ROOT) -> list[Path]:
    """Every Markdown file of the project (README.md, docs/, BENCHMARKS.md, SECURITY.md, ...)."""
    skip = {".git", ".venv", "target", "node_modules", ".pytest_cache", "__pycache__"}
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in skip]
        found += [Path(folder) / f for f in files if f.endswith(".md")]
    return sorted(found)


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked."""
    out, fence = [], None
    for number, line in enumerate(text.split("\n"), 1):
        found = _FENCE.match(line)
        if fence is None and found:
            fence = found.group(1)
            continue
        if fence is not None:
            if re.match(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$", line):
                fence = None
            continue
        out.append((number, _INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)))
    return out


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text as rendered, lower-cased, without
    punctuation other than '-' and '_', spaces turned into '-' (github-slugger's rule)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every #anchor a Markdown file has: its headings' slugs (repeated ones get -1, -2,
    ...) and the id or name of its HTML elements."""
    text = path.read_text()
    found: set[str] = set()
    seen: dict[str, int] = {}
    prose = _prose_lines(text)
    raw = text.split("\n")
    headings = []
    for number, line in prose:
        atx = _ATX.match(line)
        if atx:
            headings.append(raw[number - 1].strip().lstrip("#").strip().rstrip("#").strip())
        elif _SETEXT.match(line) and number >= 2:
            above = raw[number - 2]
            if above.strip() and not re.match(r"^\s*([|>#*+-]|\d+\.)", above) and (number - 1, above) in prose:
                headings.append(above.strip())
        found.update(_HTML_ID.findall(line))
    for heading in headings:
        slug = github_slug(heading)
        if slug in seen:
            seen[slug] += 1
            found.add(f"{slug}-{seen[slug]}")
        else:
            seen[slug] = 0
            found.add(slug)
    return found


def broken_links(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """``file:line: target: why`` for each relative link or #anchor in `path` that does not
    resolve. Links with a scheme (https:, mailto:) are not checked."""
    problems = []
    for number, line in _prose_lines(path.read_text()):
        targets = _LINK.findall(line) + _HREF.findall(line)
        reference = _REFERENCE.match(line)
        if reference:
            targets.append(reference.group(1))
        for target in targets:
            if not target or _SCHEME.match(target) or target.startswith("//"):
                continue
            file_part, _, anchor = target.partition("#")
            where = f"{path.relative_to(root)}:{number}: {target}"
            if file_part:
                base = root if file_part.startswith("/") else path.parent
                resolved = (base / file_part.lstrip("/")).resolve()
                if not resolved.exists():
                    problems.append(f"{where}: no such file or directory")
                    continue
            else:
                resolved = path
            if not anchor:
                continue
            if resolved.suffix == ".md" and resolved.is_file():
                if anchor not in anchors(resolved):
                    problems.append(f"{where}: no heading or element with that anchor in {resolved.name}")
            elif not re.fullmatch(r"L\d+(-L\d+)?", anchor):
                problems.append(f"{where}: anchors are checked in Markdown files only (or #L<line>)")
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_and_anchors_resolve(path: Path):
    problems = broken_links(path)
    assert not problems, "\n".join(problems)


def test_the_checked_files_include_the_documents():
    names = {str(p.relative_to(REPO_ROOT)) for p in markdown_files()}
    assert {"README.md", "BENCHMARKS.md", "SECURITY.md"} <= names


def test_github_slugs():
    assert github_slug("The control route: `/injector`") == "the-control-route-injector"
    assert github_slug("`policy=statusResponse`, `status=C`") == "policystatusresponse-statusc"
    assert github_slug("`control.post_documents` needs [a buffer](x.md)") == "controlpost_documents-needs-a-buffer"
    assert github_slug("Envoy as a sidecar (any platform): `envoy/`") == "envoy-as-a-sidecar-any-platform-envoy"


def test_broken_links_are_reported(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "api.md").write_text("# Control API\n\n## Errors\n\n## Errors\n\n<a id=\"top\"></a>\n")
    (tmp_path / "README.md").write_text(
        "# Title\n"
        "[ok](docs/api.md) [ok](docs/api.md#errors) [ok](docs/api.md#errors-1) [ok](docs/api.md#top)\n"
        "[ok](#title) [ok](https://example.com/#x) `[code](nowhere.md)`\n"
        "[gone](docs/missing.md)\n"
        "[bad anchor](docs/api.md#error)\n"
        "[bad local](#titel)\n"
        "```\n[in a block](nowhere.md)\n```\n"
        "[ref]: docs/nothing.md\n"
    )
    assert broken_links(tmp_path / "README.md", tmp_path) == [
        "README.md:4: docs/missing.md: no such file or directory",
        "README.md:5: docs/api.md#error: no heading or element with that anchor in api.md",
        "README.md:6: #titel: no heading or element with that anchor in README.md",
        "README.md:10: docs/nothing.md: no such file or directory",
    ]


# --------------------------------------------------------------------------- first person

# Whole words; not "US" (capitals), nor "us-east-1" or "I/O" (joined to a hyphen or slash).
_FIRST_PERSON = re.compile(r"(?<![\w/-])(?:I|[Mm]y|[Ww]e|[Oo]ur|[Uu]s)(?![\w/-])")


def first_person(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """``file:line: word: line`` for each first-person word (I, my, we, our, us, whole
    words) outside code blocks and inline code: the documents speak to the user, not of
    their writers."""
    problems = []
    for number, line in _prose_lines(path.read_text()):
        prose = re.sub(r"<!--.*?-->", "", line)
        for found in _FIRST_PERSON.finditer(prose):
            word = found.group(0)
            problems.append(f"{path.relative_to(root)}:{number}: {word!r}: {line.strip()}")
    return problems


def user_documents(root: Path = REPO_ROOT) -> list[Path]:
    """README.md and docs/*.md, the documents written for users."""
    return [root / "README.md"] + sorted((root / "docs").glob("*.md"))


@pytest.mark.parametrize("path", user_documents(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_first_person_in_the_user_documents(path: Path):
    problems = first_person(path)
    assert not problems, "\n".join(problems)


def test_first_person_words_are_found_outside_code_only(tmp_path: Path):
    (tmp_path / "doc.md").write_text(
        "# Title\n"
        "I could not find why.\n"
        "We do only HTTP, as our tests show us; my guess.\n"
        "It is used by users in the US, i.e. trust, focus, museum, status, I/O.\n"
        "Inline `we do` code and <!-- our comment --> are not prose.\n"
        "```sh\n# we run this\nI=1 my_var=2\n```\n"
        "Ours and us-east-1: ours is another word, us-east-1 starts with us.\n"
    )
    words = [p.split(": ")[1] for p in first_person(tmp_path / "doc.md", tmp_path)]
    assert words == ["'I'", "'We'", "'our'", "'us'", "'my'", "'us'"]
