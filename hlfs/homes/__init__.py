"""
Checking homes: the resolver the daemon answers with and its parts
(L{hlfs.homes.resolver}), the engine whose check processes run every job
in a home as its user (L{hlfs.homes.engine}, L{hlfs.homes.checker}), the
name service's threads, and the user table's loader.  Imports
L{hlfs.core} only.
"""
