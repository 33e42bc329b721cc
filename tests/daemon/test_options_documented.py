"""
Every option of `twistd hlfs` is in its --help (Twisted's usage.Options
builds the help from the same table) and in the README's option table.
"""

from pathlib import Path

from hlfs.daemon.tap import Options

README = Path(__file__).parent.parent.parent / "README.md"


def test_every_option_is_in_the_readme():
    readme = README.read_text()
    names = [p[0] for p in Options.optParameters] + [f[0] for f in Options.optFlags]
    assert "max-unprivileged-connections" in names
    missing = [name for name in names if f"`--{name}" not in readme and f", `--{name}" not in readme]
    assert not missing, missing


def test_every_option_is_in_the_help():
    text = str(Options())
    names = [p[0] for p in Options.optParameters] + [f[0] for f in Options.optFlags]
    assert [name for name in names if f"--{name}" not in text] == []
