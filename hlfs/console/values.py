"""
How the console shows things: L{Text} prints as it is, L{NotAvailable}
stands for a part the running daemon does not have, and L{Live} is a
name whose value is looked up each time it is shown.
"""




class Text(str):
    """
    A string the console shows as it is, without quotes, so multi-line
    reports read naturally.
    """

    def __repr__(self):
        return str(self)


class NotAvailable:
    """
    Stands for a part of the daemon that this configuration does not have.
    It is false, and touching it says what is missing.
    """

    def __init__(self, what):
        self.what = what

    def __repr__(self):
        return f"<not available: {self.what}>"

    def __bool__(self):
        return False

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"not available: {self.what}")

    def __call__(self, *args, **kwargs):
        raise TypeError(f"not available: {self.what}")


class Live:
    """
    A name for an object the daemon replaces while it runs (the user
    table is swapped on reload): every use looks the object up again, so
    the console never shows a stale one.  C{live.current()} is the object
    itself.
    """

    def __init__(self, lookup, label, describe=repr):
        self._lookup = lookup
        self._label = label
        self._describe = describe

    def current(self):
        """
        Return the object this name stands for right now.
        """
        return self._lookup()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.current(), name)

    def __repr__(self):
        return self._describe(self.current())

    def __len__(self):
        return len(self.current())

    def __iter__(self):
        return iter(self.current())

    def __getitem__(self, key):
        return self.current()[key]

    def __contains__(self, item):
        return item in self.current()

    def __bool__(self):
        return bool(self.current())


def live_attribute(get_owner, name, label, describe=repr):
    """
    A L{Live} view of C{get_owner().name}, or L{NotAvailable} if the owner
    lacks it when the console starts.
    """
    owner = get_owner()
    if isinstance(owner, NotAvailable) or not hasattr(owner, name):
        return NotAvailable(f"{label} has no {name!r}")

    def lookup():
        current = get_owner()
        return getattr(current, name, None) if not isinstance(current, NotAvailable) else None

    return Live(lookup, f"{label}.{name}", describe)


def describe_table(table):
    return (
        f"<{type(table).__name__}: {len(table)} users from {getattr(table, 'source', '?')}, "
        f"{len(getattr(table, 'problems', ()))} lines skipped>"
    )


def as_text(value):
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
