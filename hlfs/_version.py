"""
The version of hlfs.  C{VERSION} is its one source: setup.cfg reads it
without importing hlfs (a literal setuptools evaluates statically), and
the newest entry of debian/changelog must agree (tests/test_version.py).
"""

from incremental import Version

VERSION = "0.1.0"

__version__ = Version("hlfs", *map(int, VERSION.split(".")))
__all__ = ["VERSION", "__version__"]
