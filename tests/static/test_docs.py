"""The README and docs/ are checked against the code they describe (fast tier: no lab, no network).

Every fenced block is tagged by its info string:
- ``console``: commands. A ``daskfleet`` line is parsed by the real CLI parser (runner.cli.parser,
  nothing is executed) and the cluster and job files it names must exist and validate through the
  pydantic models; ``make`` targets must exist in the Makefile; ``cp A B`` makes B stand for A in
  the rest of the block; a script run with Python must exist and have every ``--flag`` given to
  it; any other repository path named must exist. No other program may appear.
- ``yaml``: a whole cluster file (``provider:``) or job file (``data:``) validates; any other
  block is marked ``<!-- yaml: partial -->`` on the line before and need only be YAML.
- ``python``: compiles, and what it imports exists.
- ``text``: diagrams and layouts; no command line in them.
A block marked ``<!-- example: not run -->`` on the line before is skipped, and counted.

A ``daskfleet ...`` command written inline (or a subcommand with options, ``up --force``) must use
subcommands and options the CLI has; relative links resolve (files and #anchors); repository
paths named in the text exist; the generated key tables and the bench table are up to date; and
the README's platform claims match the Makefile and the Terraform modules.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import io
import itertools
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
NOT_RUN = "<!-- example: not run -->"
PARTIAL = "<!-- yaml: partial -->"
MAX_NOT_RUN = 2
TAGS = ("console", "yaml", "python", "text")
# Paths that commands make, so a doc may name them although a clone has none.
GENERATED = (".venv/", ".daskfleet/", "runs/", "inventory/lab/")
# Programs a console block may run, besides daskfleet and make.
PYTHONS = ("python", "python3", ".venv/bin/python")
PATH_TOKEN = re.compile(r"^(?:\./)?(?:clusters|jobs|tests|bench|runner|playbooks|terraform|inventory|"
                        r"docs)/[\w./*-]*$")
# In a console block, a bare file name of the repository's top folder too (pyproject.toml).
TOP_FILE = re.compile(r"^[\w.-]+\.(?:py|ya?ml|toml|lock|md|cfg)$")
# JOB.yaml, N, KEY=VALUE, runs/<run-id>/: words that stand for a value
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_=-]*(\.[a-z]+)?$|<")


@dataclass
class Block:
    doc: str
    line: int
    tag: str
    lines: list[str]
    marker: str = ""


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")


# -- reading markdown ---------------------------------------------------------------------------

def split_markdown(name: str, text: str) -> tuple[list[Block], str]:
    """The fenced blocks, and the text outside them (blocks blanked, so line numbers hold)."""
    blocks, prose, current, fence = [], [], None, ""
    lines = text.splitlines()
    for i, line in enumerate(lines, 1):
        stripped = line.strip()
        if current is None and stripped.startswith("```"):
            fence = line[:len(line) - len(line.lstrip())]
            before = next((lines[j].strip() for j in range(i - 2, -1, -1) if lines[j].strip()), "")
            current = Block(name, i, stripped[3:].strip(), [], before)
            prose.append("")
        elif current is not None and stripped == "```":
            blocks.append(current)
            current = None
            prose.append("")
        elif current is not None:
            current.lines.append(line[len(fence):] if line.startswith(fence) else line)
            prose.append("")
        else:
            prose.append(line)
    if current is not None:
        blocks.append(current)  # an unclosed fence: reported by its tag check below
        current.tag = current.tag or "(unclosed)"
    return blocks, "\n".join(prose)


def code_spans(prose: str) -> list[tuple[int, str]]:
    """Inline code spans (`x` or ``x `y` z``), with their line; table cells' \\| unescaped."""
    spans = []
    for m in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", prose, re.S):
        text = " ".join(m.group(2).split()).replace("\\|", "|")
        spans.append((prose.count("\n", 0, m.start()) + 1, text))
    return spans


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but '-' and '_' removed."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(text: str) -> set[str]:
    _, prose = split_markdown("", text)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", prose, re.M)}


# -- the CLI ------------------------------------------------------------------------------------

@functools.cache
def cli_parser() -> argparse.ArgumentParser:
    """runner.cli's parser, built once: parsing reads it and never changes it."""
    from runner.cli import parser

    return parser()


def parse_command(argv: list[str]) -> tuple[argparse.Namespace | None, str]:
    """argparse's result for ``daskfleet ARGV``, or its error message; nothing is run."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return cli_parser().parse_args(argv), ""
    except SystemExit:
        return None, err.getvalue().strip().splitlines()[-1] if err.getvalue() else "exit"


def _subparsers(p: argparse.ArgumentParser):
    return next((a for a in p._actions if isinstance(a, argparse._SubParsersAction)), None)


def _expand(synopsis: str) -> list[list[str]]:
    """A synopsis (``runs wait|cancel ID [-c FILE]``, ``lab down | lab status``) -> commands."""
    pieces, depth, start = [], 0, 0
    for i, ch in enumerate(synopsis):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0 and synopsis[i - 1:i + 2] == " | ":
            pieces.append(synopsis[start:i])
            start = i + 1
    pieces.append(synopsis[start:])
    pieces = [re.sub(r"(-c|--cluster) \.\.\.", r"\1 FILE", piece) for piece in pieces]
    commands = []
    for piece in pieces:
        words = piece.split()
        if words and words[0] != "daskfleet":
            words = ["daskfleet", *words]
        words = [w.replace("[", "").replace("]", "") for w in words]
        words = [w for w in words if w and w != "..."]
        choices = [[c for c in w.split("|") if c != "..."] if "|" in w and not w.startswith("-")
                   else [w] for w in words]
        commands += [list(c)[1:] for c in itertools.product(*choices)]
    return commands


def check_synopsis(argv: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """Check ``daskfleet ARGV`` written with placeholders: each subcommand and option exists, an
    option's literal value is one it takes. Returns (problem or "", [(kind, path)] named)."""
    p, named, positional = cli_parser(), [], 0
    i = 0
    while i < len(argv):
        tok = argv[i]
        actions = {s: a for a in p._actions for s in a.option_strings}
        if tok.startswith("-") and len(tok) > 1:
            opt, eq, value = tok.partition("=")
            action = actions.get(opt)
            if action is None:
                return f"no option {opt} (known: {', '.join(sorted(actions))})", named
            if action.nargs != 0:
                if not eq:
                    i += 1
                    value = argv[i] if i < len(argv) else ""
                if value and not PLACEHOLDER.search(value):
                    if action.choices and value not in action.choices:
                        return f"{opt} {value}: not one of {sorted(action.choices)}", named
                    if action.type is int:
                        try:
                            int(value)
                        except ValueError:
                            return f"{opt} {value}: not an integer", named
                    if action.dest == "cluster":
                        named.append(("cluster", value))
            i += 1
            continue
        sub = _subparsers(p)
        if sub is not None and tok in sub.choices:
            p, positional = sub.choices[tok], 0
            i += 1
            continue
        positionals = [a for a in p._actions if not a.option_strings
                       and not isinstance(a, argparse._SubParsersAction)]
        if sub is not None and not positionals:
            return f"no subcommand {tok!r} (known: {', '.join(sub.choices)})", named
        if positional >= len(positionals) and not any(a.nargs in ("*", "+") for a in positionals):
            return f"unexpected argument {tok!r}", named
        if positional < len(positionals) and positionals[positional].dest == "job" \
                and not PLACEHOLDER.search(tok):
            named.append(("job", tok))
        positional += 1
        i += 1
    return "", named


# -- files a command names ----------------------------------------------------------------------

def validate_cluster_file(path: Path) -> str:
    """The cluster file through the pydantic model (as load_cluster validates it, without the
    checks of this machine's SSH files, which an example's ~/.ssh/id_ed25519 need not pass)."""
    from pydantic import ValidationError

    from runner.config import ClusterSpec
    from runner.errors import ConfigError
    from runner.spec_errors import format_validation_error, read_yaml

    try:
        ClusterSpec.model_validate({**read_yaml(path, "cluster"), "source": path.resolve()})
    except ValidationError as e:
        return format_validation_error(path, e, ClusterSpec)
    except ConfigError as e:
        return str(e)
    return ""


def validate_job_file(path: Path, check_paths: bool = True) -> str:
    from runner.batch.job import load_job
    from runner.errors import ConfigError

    try:
        load_job(path, check_paths=check_paths)
    except ConfigError as e:
        return str(e)
    return ""


def check_named_file(kind: str, value: str, aliases: dict[str, str], root: Path) -> str:
    real = aliases.get(value, value)
    if PLACEHOLDER.search(real) or real.startswith(("s3://", "file://")):
        return ""
    path = root / real
    if not path.is_file():
        return f"{kind} file {value} does not exist"
    return validate_cluster_file(path) if kind == "cluster" else validate_job_file(path)


def make_targets(root: Path) -> set[str]:
    makefile = (root / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([\w.-]+)\s*:(?!=)", makefile, re.M)}


def check_path_token(token: str, root: Path, top_files: bool = False) -> str:
    token = token.rstrip(".,;:)")
    if not (PATH_TOKEN.match(token) or (top_files and TOP_FILE.match(token))) \
            or PLACEHOLDER.search(token) or token.startswith(GENERATED):
        return ""
    if any(ch in token for ch in "*?["):
        return "" if list(root.glob(token)) else f"{token} matches no file"
    return "" if (root / token).exists() else f"{token} does not exist"


# -- blocks -------------------------------------------------------------------------------------

def command_lines(block: Block) -> list[str]:
    out, pending = [], ""
    for line in block.lines:
        line = pending + line.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line and not line.startswith("#"):
            out.append(line)
    return out


def check_console(block: Block, root: Path, report: Report) -> None:
    aliases: dict[str, str] = {}
    targets = make_targets(root)
    for line in command_lines(block):
        where = f"{block.doc}:{block.line}: `{line}`"
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:
            report.add(where, f"not a shell command: {e}")
            continue
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            words = words[1:]  # VAR=value before the command
        if not words:
            continue
        prog, args = words[0], words[1:]
        if any(w.startswith("[") or w.endswith("]") for w in args):
            report.add(where, "a console block holds commands to run, not a synopsis with "
                              "[optional] parts (use a table, or inline code)")
            continue
        if prog == "daskfleet":
            ns, error = parse_command(args)
            if ns is None:
                report.add(where, f"the CLI refuses it: {error}")
                continue
            for kind in ("cluster", "job"):
                value = getattr(ns, kind, None)
                if value:
                    problem = check_named_file(kind, value, aliases, root)
                    if problem:
                        report.add(where, problem)
        elif prog == "make":
            for target in (a for a in args if not a.startswith("-") and "=" not in a):
                if target not in targets:
                    report.add(where, f"the Makefile has no target {target!r}")
        elif prog == "cp":
            if len(args) != 2 or not (root / args[0]).is_file():
                report.add(where, "cp needs an existing file of the repository and a new name")
            else:
                aliases[args[1]] = aliases.get(args[0], args[0])
        elif prog in (".", "source"):
            if not args or not (args[0].startswith(GENERATED) or (root / args[0]).is_file()):
                report.add(where, "sources a file that neither exists nor is made by `make`")
        elif prog in PYTHONS:
            script = args[0] if args else ""
            if not (root / script).is_file():
                report.add(where, f"no script {script}")
                continue
            source = (root / script).read_text()
            for flag in (a.split("=")[0] for a in args[1:] if a.startswith("--")):
                if f'"{flag}"' not in source:
                    report.add(where, f"{script} has no option {flag}")
        elif prog in ("ansible-playbook", ".venv/bin/uv"):
            for token in args:
                problem = check_path_token(token, root, top_files=True)
                if problem:
                    report.add(where, problem)
        else:
            report.add(where, f"{prog}: a console block runs daskfleet, make, cp, ., python, "
                              "ansible-playbook or uv; mark other examples not run")


def check_yaml(block: Block, root: Path, report: Report) -> None:
    where = f"{block.doc}:{block.line}"
    try:
        data = yaml.safe_load("\n".join(block.lines))
    except yaml.YAMLError as e:
        report.add(where, f"not valid YAML: {e}")
        return
    if block.marker == PARTIAL:
        return
    if not isinstance(data, dict) or not ({"provider", "data"} & set(data)):
        report.add(where, f"a YAML block that is not a whole cluster or job file is marked "
                          f"{PARTIAL} on the line before")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "example.yaml"
        path.write_text("\n".join(block.lines) + "\n")
        problem = validate_cluster_file(path) if "provider" in data else \
            validate_job_file(path, check_paths=False)
    if problem:
        report.add(where, f"does not validate: {problem}")


def check_python(block: Block, report: Report) -> None:
    import ast

    where = f"{block.doc}:{block.line}"
    source = "\n".join(block.lines)
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        report.add(where, f"not valid Python: {e}")
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    report.add(where, f"{node.module} has no {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            imported = {a.asname or a.name: n.module for n in ast.walk(tree)
                        if isinstance(n, ast.ImportFrom) for a in n.names}
            if node.value.id in imported:
                obj = getattr(importlib.import_module(imported[node.value.id]), node.value.id)
                if not hasattr(obj, node.attr):
                    report.add(where, f"{node.value.id} has no {node.attr}")


def check_block(block: Block, root: Path, report: Report) -> None:
    where = f"{block.doc}:{block.line}"
    if block.marker == NOT_RUN:
        report.not_run.append(where)
        return
    if block.tag not in TAGS:
        report.add(where, f"a fenced block is tagged with one of {', '.join(TAGS)} "
                          f"(this one: {block.tag or 'nothing'})")
    elif block.tag == "console":
        check_console(block, root, report)
    elif block.tag == "yaml":
        check_yaml(block, root, report)
    elif block.tag == "python":
        check_python(block, report)
    else:
        for line in block.lines:
            if re.match(r"\s*(daskfleet|make)\s", line):
                report.add(where, f"a command in a text block: {line.strip()!r}; put it in a "
                                  "console block")


# -- prose --------------------------------------------------------------------------------------

def check_prose(name: str, prose: str, root: Path, doc_path: Path, report: Report) -> None:
    subcommands = _subparsers(cli_parser()).choices
    # `lab kill HOST`, `runs show ID`: subcommands of their own, checked without an option too
    nested = {name for name, p in subcommands.items() if _subparsers(p) is not None}
    targets = make_targets(root)
    for line, span in code_spans(prose):
        where = f"{name}:{line}: `{span}`"
        words = span.split()
        if not words:
            continue
        if words[0] == "make" and len(words) > 1:
            for target in (w for w in words[1:] if not w.startswith("-") and "=" not in w):
                if target not in targets:
                    report.add(where, f"the Makefile has no target {target!r}")
        elif words[0] == "daskfleet" or (words[0] in subcommands and len(words) > 1 and (
                any(w.startswith("-") for w in words) or words[0] in nested)):
            for argv in _expand(span):
                problem, named = check_synopsis(argv)
                if problem:
                    report.add(where, problem)
                for kind, value in named:
                    problem = check_named_file(kind, value, {}, root)
                    if problem:
                        report.add(where, problem)
        for token in words:
            problem = check_path_token(token, root)
            if problem:
                report.add(where, problem)
    for m in re.finditer(r"\[[^\]]*\]\(([^)\s]+)\)", prose):
        target = m.group(1)
        if re.match(r"^[a-z]+:", target):
            continue
        line = prose.count("\n", 0, m.start()) + 1
        file, _, anchor = target.partition("#")
        path = (doc_path.parent / file).resolve() if file else doc_path
        if not path.exists():
            report.add(f"{name}:{line}", f"the link {target} leads to no file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
            report.add(f"{name}:{line}", f"the link {target}: {path.name} has no heading #{anchor}")


def check_markdown(name: str, text: str, root: Path = REPO, doc_path: Path | None = None) -> Report:
    report = Report()
    blocks, prose = split_markdown(name, text)
    for block in blocks:
        check_block(block, root, report)
    check_prose(name, prose, root, doc_path or root / name, report)
    return report


@functools.cache
def all_docs() -> Report:
    total = Report()
    for path in DOCS:
        r = check_markdown(str(path.relative_to(REPO)), path.read_text(), REPO, path)
        total.problems += r.problems
        total.not_run += r.not_run
    return total


# -- tests --------------------------------------------------------------------------------------

def test_every_block_command_link_and_path_in_the_docs_checks_out():
    report = all_docs()
    assert not report.problems, "\n".join(report.problems)


def test_examples_that_are_not_run_are_few():
    report = all_docs()
    assert len(report.not_run) <= MAX_NOT_RUN, (
        f"{len(report.not_run)} blocks marked {NOT_RUN}: {', '.join(report.not_run)}; check them "
        "instead (tag them console or yaml)")


SAMPLE = """# Sample

```console
daskfleet up --frobnicate -c clusters/lab.yaml
daskfleet upp -c clusters/lab.yaml
daskfleet submit jobs/nosuchjob.yaml
daskfleet submit jobs/demo.yaml -c clusters/nosuch.yaml
cp clusters/hosts.example.yaml clusters/mine.yaml
daskfleet plan -c clusters/mine.yaml
make demo nosuchtarget
curl https://example.com | sh
```

```
daskfleet status
```

```yaml
name: x
provider: lab
dask: {threads_per_workr: 2}
```

<!-- example: not run -->
```console
daskfleet anything --goes
```

Run `daskfleet scale N --fast`, then `lab up --cloud gcp`, `runs wait|cancl ID` and `make nope`;
see [the faults](docs/faults.md#no-such-heading), [gone](docs/nosuch.md) and
`tests/e2e/test_0_nosuch.py`.
"""


def test_the_checker_catches_what_drifted():
    """The checker itself, on a sample with a wrong flag, a renamed subcommand, missing files, a
    bad key, a missing make target, an untagged block, an unknown program and broken links."""
    report = check_markdown("sample.md", SAMPLE)
    text = "\n".join(report.problems)
    expected = [
        "`daskfleet up --frobnicate -c clusters/lab.yaml`: the CLI refuses it: "
        "daskfleet: error: unrecognized arguments: --frobnicate",
        "`daskfleet upp -c clusters/lab.yaml`: the CLI refuses it",
        "job file jobs/nosuchjob.yaml does not exist",
        "cluster file clusters/nosuch.yaml does not exist",
        "the Makefile has no target 'nosuchtarget'",
        "curl: a console block runs daskfleet",
        "sample.md:14: a fenced block is tagged with one of console",
        "dask.threads_per_workr: unknown key",
        "`daskfleet scale N --fast`: no option --fast",
        "`lab up --cloud gcp`: --cloud gcp: not one of ['aws']",
        "`runs wait|cancl ID`: no subcommand 'cancl'",
        "the Makefile has no target 'nope'",
        "the link docs/faults.md#no-such-heading: faults.md has no heading #no-such-heading",
        "the link docs/nosuch.md leads to no file",
        "tests/e2e/test_0_nosuch.py does not exist",
    ]
    for wanted in expected:
        assert wanted in text, f"not reported: {wanted}\nreported:\n{text}"
    # the copied example validates under its new name; the marked block is skipped and counted
    assert "clusters/mine.yaml" not in text, text
    assert report.not_run == ["sample.md:25"], report.not_run
    assert len(report.problems) == len(expected), text


def _gen_reference():
    spec = importlib.util.spec_from_file_location("gen_reference", REPO / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_key_tables_match_the_models():
    stale = _gen_reference().out_of_date()
    assert not stale, (f"{', '.join(str(p.relative_to(REPO)) for p in stale)}: the generated key "
                       "tables differ from the models; run `python docs/gen_reference.py` and "
                       "commit the result")


def test_the_generator_refuses_a_key_without_a_description(monkeypatch):
    gen = _gen_reference()
    monkeypatch.delitem(gen.DESCRIPTIONS["cluster"], "dask.scheduler_port")
    monkeypatch.setitem(gen.DESCRIPTIONS["job"], "model.no_such_key", "gone")
    with pytest.raises(SystemExit, match="without a description: dask.scheduler_port"):
        gen.reference(gen.ClusterSpec, "cluster", "runner/config.py")
    with pytest.raises(SystemExit, match="does not have.*model.no_such_key"):
        gen.reference(gen.JobSpec, "job", "runner/batch/job.py")


def test_the_bench_table_is_the_newest_full_runs():
    """docs/performance.md shows the table of the newest full `make bench` (bench/suite.py writes
    both; a quick run's name ends in -quick)."""
    runs = sorted(p for p in (REPO / "bench" / "results").glob("*.md")
                  if re.fullmatch(r"\d{4}-\d{2}-\d{2}\.md", p.name))
    text = (REPO / "docs" / "performance.md").read_text()
    table = text.split("<!-- bench-table:start -->\n", 1)[1].split("<!-- bench-table:end -->")[0]
    assert table == runs[-1].read_text(), f"docs/performance.md's table is not {runs[-1].name}'s"


def test_the_platform_claims_match_the_makefile_and_the_terraform_modules():
    from runner.provision.terraform import SHARED_STATE_NEEDS

    readme = " ".join((REPO / "README.md").read_text().split())
    makefile = (REPO / "Makefile").read_text()
    packages = re.search(r"^SYSTEM_PACKAGES := (.*)$", makefile, re.M).group(1).strip()
    assert f"`{packages}`" in readme, "the README's apt packages are not the Makefile's"
    python = re.search(r"^PYTHON \?= python(\d+\.\d+)$", makefile, re.M).group(1)
    assert f"control machine's {python} " in readme and f"Debian 12's `python3` is {python}" in readme
    assert "Debian/Ubuntu" not in makefile + readme
    needs = {}
    for versions in (REPO / "terraform" / "modules").glob("*/versions.tf"):
        m = re.search(r'required_version\s*=\s*">=\s*([\d.]+)"', versions.read_text())
        needs[versions.parent.name] = m.group(1)
    cloud = {needs["aws"], needs["gcp"], needs["azure"]}
    assert len(cloud) == 1, needs
    shared = ".".join(map(str, SHARED_STATE_NEEDS))
    claim = (f">= {needs['hosts']} for the lab and existing hosts, >= {cloud.pop()} for the aws, "
             f"gcp and azure modules (`terraform/modules/*/versions.tf`), >= {shared} for a "
             "cluster whose state a team shares")
    assert claim in readme, f"the README's Terraform versions are not the modules': {claim}"


def test_the_readme_stays_short():
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move detail into docs/"
