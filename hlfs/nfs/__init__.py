"""
NFS versions 2 and 3, MOUNT versions 1 and 3, and hlfs's status program:
argument decoding and result encoding around the L{hlfs.core.linkfs} core.
Imports L{hlfs.core} and L{hlfs.xdr} only; the daemon puts the programs
behind L{hlfs.rpc}.
"""
