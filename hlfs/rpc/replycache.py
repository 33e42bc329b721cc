"""
A cache of replies to repeated calls, so that a cached READLINK costs a
dictionary lookup instead of a decode, a resolution and an encode.

A reply is stored with the time until which it stays right and the
validity source's C{generation} when it was made.  Anything that could
change an answer (a reload, a flushed cache, a link that now points
elsewhere) moves the generation on, which drops every stored reply at
once; expiry handles the rest (a home check due again).

The key is the call's bytes after the xid: credential and arguments
alike, so the answer for one caller is never given to another.
"""

from hlfs.rpc.message import accepted_success_tail


class ReplyCache:
    """
    @ivar validity: anything with a C{generation} attribute.
    @ivar clock: anything with C{seconds()}.
    @ivar size: the most replies kept; past it the cache starts afresh.
    """

    def __init__(self, validity, clock, size=32768):
        self.validity = validity
        self.clock = clock
        self.size = size
        self.entries = {}
        self.generation = validity.generation
        self.hits = 0

    def lookup(self, data):
        """
        Return C{(stats key, reply after the xid)} for a call seen before
        whose reply is still right, else L{None}.
        """
        if self.validity.generation != self.generation:
            self.entries = {}
            self.generation = self.validity.generation
            return None
        entry = self.entries.get(data[4:])
        if entry is None:
            return None
        if entry[0] <= self.clock.seconds():
            del self.entries[data[4:]]
            return None
        self.hits += 1
        return entry[1], entry[2]

    def store(self, call, body, until):
        """
        Remember C{body}, the result of C{call}, as right until C{until}
        (clock seconds), if that is still ahead.
        """
        if self.validity.generation != self.generation:
            self.entries = {}
            self.generation = self.validity.generation
        if until <= self.clock.seconds():
            return
        if len(self.entries) >= self.size:
            self.entries = {}
        self.entries[call.message[4:]] = (
            until, (call.prog, call.vers, call.proc), accepted_success_tail + body
        )
