"""
hlfs: the Home-Link File System.

A user-level NFS server that serves one symbolic link whose value depends
on who asks, so that C{/var/spool/mail -> /mail/home -> ~user/.mailspool}.
"""

from hlfs._version import __version__

__all__ = ["__version__"]
