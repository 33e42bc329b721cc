"""
The policy: who gets which link (Tables 1-3), per-caller handles, the spool
rules and the user table.  No sockets, no threads, no XDR: it imports no
other part of hlfs, and does I/O only through what it is handed.
"""
