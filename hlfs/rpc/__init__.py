"""
ONC RPC version 2 (RFC 5531): messages, a dispatcher, transports over UDP
and TCP, a small client, and portmapper registration.
"""
