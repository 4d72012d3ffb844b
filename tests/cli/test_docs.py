"""Every `fmnist ...` line in a code block of the docs is a real command with real flags."""

import re
import shlex
from pathlib import Path

import pytest

from cli.main import build_parser

DOCS = Path(__file__).resolve().parents[2] / "docs"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_OPERATORS = {">", ">>", "2>&1", "|", "&&", "||", ";"}


def commands(page: Path) -> list[str]:
    """The `fmnist ...` part of each line of the page's code blocks (a cron line's included)."""
    found = []
    for block in FENCE.findall(page.read_text()):
        found += [line[line.index("fmnist ") :] for line in block.splitlines() if "fmnist " in line]
    return found


def argv(command: str) -> list[str]:
    """The arguments of one command line, up to the first shell operator."""
    words = shlex.split(command)[1:]
    cut = next((i for i, w in enumerate(words) if w in SHELL_OPERATORS), len(words))
    return words[:cut]


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_every_command_in_the_docs_parses(page: Path, capsys):
    found = commands(page)
    assert found, f"{page}: no fmnist command in a code block"
    for command in found:
        try:
            build_parser().parse_args(argv(command))
        except SystemExit:
            pytest.fail(f"{page.name}: `{command}` is not a valid command: {capsys.readouterr().err.strip()}")


def test_a_wrong_flag_is_caught(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("```sh\nfmnist canary logs --no-such-flag\n```\n")
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv(commands(page)[0]))
