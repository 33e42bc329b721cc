"""
The running service: configuration, C{twistd hlfs}'s options, start-up order
and signals, the listening ports, the self-mount and /proc/mounts.  Imports
every part below it: console, nfs, rpc, homes, core.
"""
