"""
Checking homes: the blocking probe run as the user (per-thread credentials),
the bounded pool that runs it with a deadline, the cache of its results and
the user table's loader.  Imports L{hlfs.core} only.
"""
