"""The docs cannot drift from the code: every command, flag, make target and link they show exists.

Read from `README.md` and `docs/*.md`: every `fmnist ...` command line, in code blocks and in
inline code (line continuations, pipes, `&&`, `;`, a trailing `&`, environment assignments, `$ `
prompts and paths such as `.venv/bin/fmnist` are understood), is checked against the real
argument parsers of `cli/main.py`: the subcommand exists, and every flag shown is one that
subcommand accepts, spelled in full. Every `make X` names a target of the Makefile. Every
relative markdown link or image opens a file of the checkout, and its `#anchor`, if any, a
heading of that page.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Flags the pages show for other programs, outside any `fmnist` command line; every other flag a page names in
# prose must be a flag of some `fmnist` subcommand, so a renamed flag cannot live on in a sentence either.
OTHER_PROGRAMS_FLAGS = {
    "TF Serving's model server": {
        "--allow_version_labels_for_unavailable_models",
        "--enable_model_warmup",
        "--model_config_file_poll_wait_seconds",
    },
    "docker": {"--mount", "--rm"},
    "farm-bench (this host's side-by-side timer)": {"--warmup", "--vs", "--timeout", "--"},
    "py-spy (a sampling profiler)": {"--subprocesses", "--rate"},
    "git": {"--short"},
    "pip": {"--ignore-requires-python"},
    "tensorboard": {"--logdir"},
    "tfx pipeline compile": {"--engine", "--pipeline_path"},
    "Beam and Dataflow": {
        "--direct_num_workers",
        "--experiments",
        "--machine_type",
        "--max_num_workers",
        "--project",
        "--region",
        "--sdk_container_image",
        "--staging_location",
        "--temp_location",
    },
    "benchmarks/*.py": {
        "--baseline",
        "--days",
        "--eval-dir",
        "--fit-images",
        "--images",
        "--keep-served",
        "--last-day",
        "--no-from-scratch",
        "--older-spans",
        "--only",
        "--resume",
        "--runs",
        "--snapshot-after",
        "--table",
        "--threads",
        "--train-images",
        "--windows",
    },
}

SEPARATORS = re.compile(r"\s(?:&&|\|\||\||;)\s|\s&\s*$|\s&\s")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
EDGE_PUNCTUATION = "()[]{},;:'\"`"


@dataclass(frozen=True)
class Shown:
    """A piece of shell a page shows: the text, the page and the line it starts on."""

    text: str
    page: Path
    line: int

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def shown_shell(page: Path) -> list[Shown]:
    """Every line of every fenced code block (continuations joined), and every inline code span."""
    found: list[Shown] = []
    lines = page.read_text().splitlines()
    fenced, pending, pending_line = False, "", 0
    paragraph: list[tuple[int, str]] = []

    def flush_paragraph() -> None:
        if not paragraph:
            return
        text = "\n".join(line for _, line in paragraph)
        for match in re.finditer(r"`([^`]+)`", text):
            start = paragraph[0][0] + text[: match.start()].count("\n")
            found.append(Shown(match.group(1).replace("\n", " "), page, start))
        paragraph.clear()

    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith("```"):
            flush_paragraph()
            fenced = not fenced
            continue
        if fenced:
            if not pending:
                pending_line = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            found.append(Shown(pending + line, page, pending_line))
            pending = ""
        elif line.strip():
            paragraph.append((number, line))
        else:
            flush_paragraph()
    flush_paragraph()
    return found


def without_comment(text: str) -> str:
    """The shell text before a `#` comment (a `#` that starts a word, outside quotes)."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i]
    return text


def words(segment: str) -> list[str]:
    try:
        return shlex.split(segment)
    except ValueError:  # an unbalanced quote in prose: plain whitespace splitting is good enough here
        return segment.split()


def is_fmnist(word: str) -> bool:
    word = word.strip(EDGE_PUNCTUATION)
    return word == "fmnist" or word.endswith("bin/fmnist")  # `.venv/bin/fmnist`; not `gs://bucket/fmnist`


def commands_in(shown: Shown, program: str) -> list[list[str]]:
    """The argument lists `program` (`fmnist` or `make`) is given in a piece of shell, one per call."""
    text = without_comment(shown.text.removeprefix("$ "))
    calls = []
    for segment in SEPARATORS.split(" " + text + " "):
        tokens = words(segment)
        for i, token in enumerate(tokens):
            if ENV_ASSIGNMENT.match(token):  # `ExecStart=/srv/.venv/bin/fmnist run`, `FMNIST_X=y fmnist ...`
                token = token.split("=", 1)[1]
            if (is_fmnist(token) if program == "fmnist" else token == program) and (
                program == "fmnist" or i == 0 or all(ENV_ASSIGNMENT.match(t) for t in tokens[:i])
            ):
                calls.append(tokens[i + 1 :])
                break
    return calls


def subparsers_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def check_fmnist_call(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """What is wrong with `fmnist <args>` as a page shows it: an unknown subcommand or flag."""
    problems, path = [], ["fmnist"]
    args = [a.strip(EDGE_PUNCTUATION) if not a.startswith("-") else a.rstrip(EDGE_PUNCTUATION) for a in args]
    args = [a for a in args if a]
    while subparsers_of(parser):
        choices = subparsers_of(parser)
        if not args or args[0].startswith("-"):
            break
        if args[0] not in choices:
            return [f"`{' '.join(path)}` has no subcommand {args[0]!r} (it has: {', '.join(choices)})"]
        path.append(args.pop(0))
        parser = choices[path[-1]]
    flags = parser._option_string_actions
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            continue
        if not arg.startswith("-") or arg == "-" or re.fullmatch(r"-\d+(\.\d+)?", arg):
            continue
        name = arg.split("=", 1)[0]
        action = flags.get(name)
        if action is None:
            problems.append(f"`{' '.join(path)}` has no flag {name}")
            continue
        skip_value = action.nargs != 0 and "=" not in arg
    return problems


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M)} - {".PHONY"}


def make_targets_named(args: list[str]) -> list[str]:
    """The targets in `make <args>`: the words before the first flag, leaving variable assignments out."""
    targets = []
    for arg in args:
        if arg.startswith("-"):
            break
        if not ENV_ASSIGNMENT.match(arg):
            targets.append(arg.strip(EDGE_PUNCTUATION))
    return [t for t in targets if t]


def github_anchor(heading: str) -> str:
    """The `#fragment` GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    anchors, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"^#{1,6} ", line):
            anchors.add(github_anchor(line.lstrip("#")))
    return anchors


def relative_links(page: Path) -> list[tuple[int, str]]:
    """`(line, target)` of every markdown link and image outside code blocks that is not a URL."""
    links, fenced = [], False
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):
                links.append((number, target))
    return links


def link_problem(page: Path, target: str) -> str | None:
    path_part, _, fragment = target.partition("#")
    file = (page.parent / path_part).resolve() if path_part else page
    shown = file.relative_to(ROOT).as_posix() if file.is_relative_to(ROOT) else str(file)
    if not file.exists():
        return f"{target}: no file {shown}"
    if fragment and file.suffix == ".md" and fragment not in anchors_of(file):
        return f"{target}: {shown} has no heading whose anchor is #{fragment}"
    return None


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


@pytest.fixture(scope="module")
def shell_shown() -> list[Shown]:
    return [shown for page in DOCS for shown in shown_shell(page)]


def test_the_docs_show_the_commands_a_newcomer_runs(shell_shown: list[Shown]):
    """The reader finds the tour's commands, so the checks below cannot pass by finding nothing."""
    subcommands = {
        " ".join(args[:2]) if args[:1] == ["data"] else args[0]
        for shown in shell_shown
        for args in commands_in(shown, "fmnist")
        if args
    }
    assert {"serve", "predict", "drift", "data add", "run", "promote", "rollback", "labels"} <= subcommands
    readme_make = {
        t for s in shell_shown if s.page.name == "README.md" for a in commands_in(s, "make") for t in a
    }
    assert {"run", "test"} <= readme_make


def test_every_fmnist_command_in_the_docs_exists_with_every_flag_it_shows(
    parser: argparse.ArgumentParser, shell_shown: list[Shown]
):
    problems = [
        f"{shown.where()}: {problem}   [{shown.text.strip()}]"
        for shown in shell_shown
        for args in commands_in(shown, "fmnist")
        for problem in check_fmnist_call(parser, args)
    ]
    assert not problems, "\n".join(problems)


def every_flag(parser: argparse.ArgumentParser) -> set[str]:
    flags = set(parser._option_string_actions)
    for sub in subparsers_of(parser).values():
        flags |= every_flag(sub)
    return flags


def test_every_flag_the_docs_name_outside_a_command_line_is_a_flag_of_fmnist(
    parser: argparse.ArgumentParser, shell_shown: list[Shown]
):
    known = every_flag(parser).union(*OTHER_PROGRAMS_FLAGS.values())
    problems = [
        f"{shown.where()}: no fmnist subcommand has {name}   [{shown.text.strip()}]"
        for shown in shell_shown
        if not commands_in(shown, "fmnist")
        for word in words(without_comment(shown.text))
        if word.startswith("--")
        and (name := word.split("=", 1)[0].rstrip(EDGE_PUNCTUATION + ".")) not in known
    ]
    assert not problems, "\n".join(problems)


def test_every_make_target_the_docs_name_is_in_the_makefile(shell_shown: list[Shown]):
    targets = makefile_targets()
    problems = [
        f"{shown.where()}: no make target {target!r}   [{shown.text.strip()}]"
        for shown in shell_shown
        for args in commands_in(shown, "make")
        for target in make_targets_named(args)
        if target not in targets
    ]
    assert not problems, "\n".join(problems)


def test_every_relative_link_in_the_docs_opens_a_file_and_its_heading():
    problems = [
        f"{page.relative_to(ROOT)}:{line}: {problem}"
        for page in DOCS
        for line, target in relative_links(page)
        if (problem := link_problem(page, target))
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (".venv/bin/fmnist run --workdir /tmp/fm --window-span 4", "`fmnist run` has no flag --window-span"),
        ("fmnist data ad x.npy --labels y.txt", "`fmnist data` has no subcommand 'ad'"),
        (
            "FMNIST_X=1 fmnist drift logs --logged-version canary | tail -3 && fmnist promte",
            "no subcommand 'promte'",
        ),
        (
            "fmnist compile-kubeflow --image i \\\n  --beam-args '--project=p' --no-such-flag",
            "has no flag --no-such-flag",
        ),
    ],
)
def test_a_renamed_flag_or_subcommand_in_a_page_is_reported(
    parser: argparse.ArgumentParser, tmp_path: Path, line: str, problem: str
):
    page = tmp_path / "page.md"
    page.write_text(f"Run this:\n\n```bash\n{line}\n```\n")
    found = [
        p
        for shown in shown_shell(page)
        for args in commands_in(shown, "fmnist")
        for p in check_fmnist_call(parser, args)
    ]
    assert len(found) == 1 and problem in found[0], found


def test_the_flags_of_a_correct_page_are_all_accepted(parser: argparse.ArgumentParser, tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(
        "Inline `fmnist run --workdir /tmp/fm --window-spans 4 --no-warm-start` and a block:\n\n```bash\n"
        "30 2 * * * cd /srv && .venv/bin/fmnist run --workdir /data/fm >> run.log 2>&1\n"
        "$ fmnist serve --request-log-dir logs &   # --not-a-flag in a comment\n```\n"
    )
    calls = [args for shown in shown_shell(page) for args in commands_in(shown, "fmnist")]
    assert len(calls) == 3
    assert [p for args in calls for p in check_fmnist_call(parser, args)] == []
