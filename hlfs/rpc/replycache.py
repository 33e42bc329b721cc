"""
A cache of replies to repeated calls, so that a cached READLINK costs a
dictionary lookup instead of a decode, a resolution and an encode.

A reply is stored with the time until which it stays right and the
validity source's C{generation} when it was made.  Anything that could
change an answer (a reload, a flushed cache, a link that now points
elsewhere) moves the generation on, which drops every stored reply at
once; expiry handles the rest (a home check due again).

The key is the call's bytes after the xid: credential and arguments
alike, so the answer for one caller is never given to another.  Keys and
replies are counted in bytes as well as entries: a key may carry up to a
record's worth of trailing bytes, so a count of entries alone would not
bound the memory.
"""

from hlfs.rpc.message import accepted_success_tail


class ReplyCache:
    """
    @ivar validity: anything with a C{generation} attribute.
    @ivar clock: anything with C{seconds()}.
    @ivar size: the most replies kept; past it the cache starts afresh.
    @ivar max_bytes: the most bytes of keys and replies kept, likewise.
    @ivar bytes: bytes of keys and replies kept now.
    @ivar resets: how often a bound made the cache start afresh.
    """

    # A key longer than this carries bytes no real call has; storing it
    # would only make room for an attacker.
    MAX_KEY = 2048
    # Per entry, besides its key and reply: the dict slot and the tuple.
    ENTRY_OVERHEAD = 200

    def __init__(self, validity, clock, size=32768, max_bytes=32 * 1024 * 1024):
        self.validity = validity
        self.clock = clock
        self.size = size
        self.max_bytes = max_bytes
        self.entries = {}
        self.bytes = 0
        self.generation = validity.generation
        self.hits = 0
        self.resets = 0
        self._procedures = {}

    def lookup(self, data):
        """
        Return C{(stats key, reply after the xid)} for a call seen before
        whose reply is still right, else L{None}.
        """
        if self.validity.generation != self.generation:
            self._clear()
            return None
        key = data[4:]
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock.seconds():
            del self.entries[key]
            self.bytes -= self._cost(key, entry[2])
            return None
        self.hits += 1
        return entry[1], entry[2]

    def store(self, call, body, until):
        """
        Remember C{body}, the result of C{call}, as right until C{until}
        (clock seconds), if that is still ahead.
        """
        if self.validity.generation != self.generation:
            self._clear()
        if until <= self.clock.seconds():
            return
        key = call.message[4:]
        if len(key) > self.MAX_KEY:
            return
        reply = accepted_success_tail + body
        cost = self._cost(key, reply)
        old = self.entries.get(key)
        if old is not None:
            self.bytes -= self._cost(key, old[2])
        elif len(self.entries) >= self.size or self.bytes + cost > self.max_bytes:
            self._clear()
            self.resets += 1
        procedure = (call.prog, call.vers, call.proc)
        # One tuple per procedure, shared by its entries: the dispatcher
        # counts every hit under it, and with many callers a tuple of
        # their own per entry is one more object to fetch from memory.
        procedure = self._procedures.setdefault(procedure, procedure)
        self.entries[key] = (until, procedure, reply)
        self.bytes += cost

    def _cost(self, key, reply):
        return len(key) + len(reply) + self.ENTRY_OVERHEAD

    def _clear(self):
        self.entries = {}
        self.bytes = 0
        self.generation = self.validity.generation
