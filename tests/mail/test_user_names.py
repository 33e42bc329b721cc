"""
The mail tools' one rule for names that may name a mailbox
(L{hlfs.mail.accounts.valid_user_name}), and what C{hlfs lostmail} asks
of a spool entry's name on top of it
(L{hlfs.mail.accounts.plausible_user_name}).

C{hlfs deliver} takes its names from the MTA, which chose the recipient:
any name that is one safe path component is asked about, and the name
service's "no such user" bounces it.  C{hlfs lostmail} takes its names
from a spool every user may write, so it also refuses what useradd(8)
and nslcd's default C{validnames} would never make a user name (a space,
a control character, a C{+}): glibc reports nslcd's refusal of such a
name as an error of the service, which would fail every run, not as "no
such user".  The command-line tests pin each tool's answers
(C{tests/mail/test_deliver.py}, C{tests/mail/test_lostmail.py},
C{tests/mail/test_lostmail_attacks.py}); these pin the relation.
"""

import re

from hypothesis import given
from hypothesis import strategies as st

from hlfs.mail.accounts import plausible_user_name, valid_user_name

PORTABLE = re.compile(rb"[A-Za-z0-9_][A-Za-z0-9_.@-]*\Z")

names = st.one_of(
    st.binary(max_size=300),
    st.text(alphabet="ab_.@-+/ \x00\x1b", max_size=12).map(str.encode),
    st.integers(250, 260).map(lambda n: b"a" * n),
)


@given(names)
def test_lostmail_asks_the_delivery_rule_and_a_portable_spelling(name):
    assert plausible_user_name(name) == (valid_user_name(name) and bool(PORTABLE.match(name)))


def test_what_each_tool_takes():
    both = [b"alice", b"a" * 256, b"first.last", b"x@y", b"_apt", b"Debian-exim"]
    deliver_only = [b"x+y", b"bad name", b"\x1b]0;owned\x07x", b"j\xc3\xb6rg", b"@x", b"host$"]
    neither = [b"", b"a" * 257, b"x.lock", b".hidden", b"-rf", b"a/b", b"../etc", b"a\0b"]
    assert [n for n in both if not (valid_user_name(n) and plausible_user_name(n))] == []
    assert [n for n in deliver_only if not valid_user_name(n) or plausible_user_name(n)] == []
    assert [n for n in neither if valid_user_name(n) or plausible_user_name(n)] == []
