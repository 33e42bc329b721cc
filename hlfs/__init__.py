"""
hlfs: the Home-Link File System.

A user-level NFS server that serves one symbolic link whose value depends
on who asks, so that C{/var/spool/mail -> /mail/home -> ~user/.mailspool}.
"""

__all__ = ["__version__"]


def __getattr__(name):
    # Read when asked for: the home-check processes import hlfs without
    # needing its version, and incremental costs them 3 MB.
    if name == "__version__":
        from hlfs._version import __version__

        return __version__
    raise AttributeError(f"module 'hlfs' has no attribute {name!r}")
