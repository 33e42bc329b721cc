"""
The Linux client's "silly rename" of root's dotlocks.

A process that removes a file it still holds open (C{mail.local} does
this with its C{NAME.lock}) cannot have the file vanish on an NFS mount:
the client renames it to a hidden name, C{.nfs} followed by 24 hex digits
(16 of the file id, 8 of a counter), and removes that name once the last
descriptor is closed.  For hlfs's lock files the rename is the removal
the process asked for: the real lock is removed at once, as NAME, and the
hidden name is remembered so that the client's later REMOVE of it is
answered as done.

Only root from a privileged port can make hidden names (it alone may
remove locks), and what is remembered is bounded: a few names per
client, a few hundred clients, the oldest forgotten first.  A forgotten
name's late REMOVE answers NOENT, which the client's clean-up ignores.
"""

import re
from collections import OrderedDict

_HIDDEN = re.compile(rb"\.nfs[0-9a-f]{24}\Z")


def is_hidden(name):
    """
    Whether C{name} is a hidden name of the Linux client's silly rename.
    """
    return _HIDDEN.match(name) is not None


class HiddenNames:
    """
    Hidden names given to removed locks, per client (the AUTH_SYS machine
    name of root's calls).

    @ivar per_client: most names kept for one client.
    @ivar clients: most clients kept.
    """

    def __init__(self, per_client=64, clients=256):
        self.per_client = per_client
        self.clients = clients
        self._names = OrderedDict()

    def __len__(self):
        return sum(len(names) for names in self._names.values())

    def remember(self, client, name, owner):
        """
        Remember that C{client} hid C{owner}'s removed lock as C{name}.
        """
        names = self._names.pop(client, None)
        if names is None:
            names = OrderedDict()
            if len(self._names) >= self.clients:
                self._names.popitem(last=False)
        self._names[client] = names
        names.pop(name, None)
        names[name] = owner
        while len(names) > self.per_client:
            names.popitem(last=False)

    def forget(self, client, name):
        """
        Forget C{client}'s hidden C{name}.

        @return: the user whose lock it hid, or L{None} if it is not (or
            no longer) remembered.
        """
        names = self._names.get(client)
        if names is None:
            return None
        owner = names.pop(name, None)
        if not names:
            del self._names[client]
        return owner
