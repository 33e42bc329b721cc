"""
ONC RPC version 2 (RFC 5531): messages, a dispatcher, transports over UDP
and TCP, a reply cache, a small client, and portmapper registration.
Knows no NFS: it imports only L{hlfs.xdr}.
"""
