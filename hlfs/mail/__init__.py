"""
Mail as a library: the delivery agent, the remailer and their transports,
NFS-safe locks, mbox format, accounts and the mail log.  Imports L{hlfs.core}
only (the user table); its command lines live in L{hlfs.cli}.
"""
