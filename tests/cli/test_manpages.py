"""
The manual pages in man/: mandoc's linter and man-db's renderer find
nothing to warn about, and each page documents exactly the options its
parser accepts, read from the parsers themselves: twistd's
L{usage.Options} of the plugin, the getopt front end of C{hlfsd}, and the
argparse parser of every C{hlfs} subcommand.
"""

import argparse
import os
import re
import shutil
import string
import subprocess
from pathlib import Path

import pytest

from hlfs.cli import hlfsd
from hlfs.cli import main as cli
from hlfs.daemon import tap

MAN = Path(__file__).resolve().parents[2] / "man"
PAGES = sorted(p.name for p in MAN.iterdir() if re.fullmatch(r".+\.[1-8]", p.name))


def need(program):
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is missing: scripts/run-tests installs it")
    return path


def documented(lines):
    """
    Return the options of the C{.It} items in mdoc C{lines}: C{.It Fl f ,
    Fl \\-from Ar sender} documents C{-f} and C{--from}.
    """
    found = set()
    for line in lines:
        if line.startswith(".It "):
            words = line.split()
            for i, word in enumerate(words[:-1]):
                if word == "Fl":
                    found.add("-" + words[i + 1].replace("\\-", "-"))
    return found


def page_lines(name):
    return (MAN / name).read_text().splitlines()


def subsections(lines):
    """
    Return C{{heading: lines}} for each C{.Ss} of a page.
    """
    sections = {}
    current = None
    for line in lines:
        if line.startswith(".Ss "):
            current = sections.setdefault(line[4:].strip(), [])
        elif line.startswith(".Sh "):
            current = None
        elif current is not None:
            current.append(line)
    return sections


def test_pages_exist():
    assert PAGES == ["hlfs.1", "hlfsd.8", "twistd-hlfs.8"]


@pytest.mark.parametrize("page", PAGES)
def test_mandoc_lint(page):
    """
    If mandoc finds anything of level warning or worse, the test shows it.
    (Style notes, such as cross references to pages this host lacks, are
    not warnings.)
    """
    result = subprocess.run(
        [need("mandoc"), "-Tlint", "-W", "warning", str(MAN / page)],
        capture_output=True, text=True,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("page", PAGES)
def test_man_renders_without_warnings(page):
    result = subprocess.run(
        [need("man"), "-l", "--warnings", str(MAN / page)],
        capture_output=True, text=True, env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_STDERR": "1"},
    )
    assert result.returncode == 0
    assert result.stderr == ""
    assert "Home-Link File System" in result.stdout


def test_twistd_page_documents_every_plugin_option():
    options = tap.Options()
    accepted = {"--" + name.rstrip("=") for name in options.longOpt}
    accepted |= {"-" + letter for letter in options.shortOpt if letter != ":"}
    assert documented(page_lines("twistd-hlfs.8")) == accepted


def hlfsd_letters():
    """
    The option letters C{hlfsd}'s getopt accepts, found by offering it each
    letter in turn.
    """
    accepted = set()
    for letter in string.ascii_letters:
        try:
            hlfsd.translate([f"-{letter}", "x"])
        except hlfsd.CommandLineError as e:
            if "not recognized" in str(e):
                continue
        accepted.add(f"-{letter}")
    return accepted


def test_hlfsd_page_documents_every_option():
    assert documented(page_lines("hlfsd.8")) == hlfsd_letters()


class _Parsed(Exception):
    def __init__(self, parser):
        self.parser = parser


def subcommand_options(name, monkeypatch):
    """
    Return the option strings the argparse parser of C{hlfs NAME} accepts,
    caught as the subcommand's C{main} asks it to parse.
    """

    def capture(parser, *args, **kwargs):
        raise _Parsed(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    module, _, function = cli.SUBCOMMANDS[name][0].partition(":")
    main_of = getattr(__import__(module, fromlist=["_"]), function or "main")
    with pytest.raises(_Parsed) as caught:
        main_of(["--help"], prog=f"hlfs {name}")
    return {
        option
        for action in caught.value.parser._actions
        if not isinstance(action, argparse._HelpAction)
        for option in action.option_strings
    }


def test_hlfs_page_has_one_subsection_per_subcommand():
    sections = subsections(page_lines("hlfs.1"))
    assert sorted(sections) == sorted(f"hlfs {name}" for name in cli.SUBCOMMANDS)


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_hlfs_page_documents_every_subcommand_option(name, monkeypatch):
    section = subsections(page_lines("hlfs.1")).get(f"hlfs {name}", [])
    assert documented(section) == subcommand_options(name, monkeypatch)
