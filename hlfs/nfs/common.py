"""
What NFSv2 and v3 procedures share: answering from the core's results
(immediate or Deferred), and decoding the argument types both versions
use.
"""

from hlfs.core.linkfs import NFSError

MAX_PATH = 1024
MAX_NAME_ON_WIRE = 4096


def answer(compute, ok, fail):
    """
    Call C{compute()}; encode its result with C{ok(result)} or its
    L{NFSError} with C{fail(status)}, now or when a Deferred fires.
    C{ok} is L{None} for a call the core answers with an error only.
    """
    try:
        result = compute()
    except NFSError as e:
        return fail(e.status)
    # Answers are tuples; isinstance() against Deferred, an ABC by way of
    # Awaitable, would be slow on this path.
    if isinstance(result, tuple):
        return ok(result)
    return result.addCallbacks(ok, lambda f: fail(f.trap(NFSError) and f.value.status))


def remember(replies, fs, call, caller, body, attr=None):
    """
    Offer C{body}, a successful result of C{call}, to the reply cache (if
    any) for as long as C{caller}'s link stays as it is; return it.
    C{attr}, the attributes of the node the answer is about, may say it
    cannot be kept (a lock file).
    """
    if replies is not None and (attr is None or fs.lasting(attr)):
        replies.store(call, body, fs.valid_until(caller))
    return body


def caller_of(fs, call):
    cred = call.cred
    return fs.caller(cred.flavor, cred.uid, cred.gid, call.privileged)


def client_of(call):
    """
    Who is calling, as far as remembering root's hidden names goes
    (L{hlfs.core.hidden}): the machine name of its credential.
    """
    return call.cred.machine


def name(args):
    """
    Decode a file name: a string of at most 4096 bytes on the wire.  The
    core answers NAMETOOLONG or NOENT for names it cannot have.
    """
    return args.opaque(MAX_NAME_ON_WIRE)


def path(args):
    return args.opaque(MAX_PATH)
