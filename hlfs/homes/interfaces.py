"""
The parts the home-link resolver (L{hlfs.homes.resolver.HomeResolver})
is composed of, each an object of its own behind one of these
interfaces:

  - L{IKnownUsers}: the users known, their check results and the last
    answer each was given (L{hlfs.homes.known.KnownUsers});
  - L{ICheckEngine}: the check processes and their jobs
    (L{hlfs.homes.engine.CheckEngine});
  - L{IHomeChecks}: a user's home check, from the job to the result kept
    (L{hlfs.homes.checks.HomeChecks});
  - L{IDirectoryUsers}: the users the table lacks, asked for one at a time,
    and their confirmation after a reload
    (L{hlfs.homes.directory.DirectoryUsers});
  - L{IReloads}: the user table's reloads (L{hlfs.homes.reload.TableReloads});
  - L{IOperatorViews}: what the operator sees
    (L{hlfs.homes.views.OperatorViews}).

Parts use each other only through these: no part reads another's
private attributes.
"""

from zope.interface import Attribute, Interface


class IKnownUsers(Interface):
    """
    The users of the table and those learned one at a time, with their
    per-user state (L{hlfs.homes.state}).
    """

    state = Attribute("The UserState of the current table.")
    learned = Attribute("The LearnedState of the users learned one at a time.")
    table = Attribute("The current UserTable.")
    rules = Attribute("The SpoolRules.")
    generation = Attribute("Moves whenever an answer may change other than by expiry.")
    dirty = Attribute("Positions of the table's state changed while a reload runs, or None.")
    epochs = Attribute("The stamps of the table loads, by epoch.")
    max_learned = Attribute("The most users learned one at a time.")

    def locate(uid):
        """
        Return C{(state, i)}: the user's state and position, C{i} -1 if
        nobody knows C{uid}.
        """

    def user_named(name):
        """
        Return the User named C{name}, or None.
        """

    def serve(state, i, spool, alt):
        """
        Return the Resolution for position C{i} (its spool, or the
        alternate spool if C{alt}), moving its time if the answer changed.
        """

    def serve_uid(uid, alt):
        """
        Like L{serve}, by uid.
        """

    def unknown():
        """
        Return the Resolution of a uid nobody knows.
        """

    def peek(uid, verify=True):
        """
        Return the last Resolution given to C{uid}, without any check.
        """

    def stamp(state, i):
        """
        Return the time of position C{i}'s last answer.
        """

    def touch(state, i):
        """
        Note that position C{i} changed, for a reload copying the state.
        """

    def record_check(state, i, ok, expires, unusable=None):
        """
        Keep a check result until C{expires}; return whether the home's
        usability changed.
        """

    def unusable(named=10):
        """
        Return C{(count, users)} of the homes found unusable.
        """

    def flush(uid=None):
        """
        Forget check results, of C{uid} or of everybody.
        """

    def learn(user):
        """
        Add a user the name service found; return its C{(state, i)}.
        """

    def drop_learned(uid, gone=False):
        """
        Forget a learned user (C{gone}: the name service says it is gone).
        """

    def install(state, changed):
        """
        Swap in a reload's UserState.
        """

    def footprint():
        """
        Return the bytes of the table and the per-user state.
        """


class ICheckEngine(Interface):
    """
    Jobs run in the check processes, one per process at a time, with
    deadlines and a bounded queue.
    """

    size = Attribute("The check processes, and the most jobs running at once.")
    stuck_after = Attribute("Seconds after which a running job is stuck.")
    processes = Attribute("The CheckProcesses.")

    def start():
        """
        Start the processes; return a Deferred firing once all have.
        """

    def stop():
        """
        End the processes and drop every job.
        """

    def find(key):
        """
        Return the Flight in flight for C{key}, or None.
        """

    def submit(key, path, job, finish, home=None):
        """
        Run a job record for C{key}; return its Flight, or None if refused.
        """

    def wait(flight, timeout, fallback):
        """
        Return a Deferred of the flight's answer, or of C{fallback(flight)}
        after C{timeout} seconds.
        """

    def count():
        """
        Return how many jobs are in flight.
        """

    def queued():
        """
        Return how many jobs wait for a process.
        """

    def busy():
        """
        Return how many processes are on a job.
        """

    def stuck():
        """
        Return how many processes are stuck on their job.
        """

    def exhausted():
        """
        Return whether every process is stuck.
        """

    def in_flight():
        """
        Return the FlightInfos of the jobs in flight.
        """

    def hung():
        """
        Return the FlightInfos of the jobs running longer than the deadline.
        """


class IHomeChecks(Interface):
    """
    A user's home check: the job planned, run by the engine, its result
    kept and logged.
    """

    stats = Attribute("The CheckStats.")

    def check(state, i, user, spool, now, budget):
        """
        Return the answer for position C{i} (C{user}, whose spool is
        C{spool}) once its home is checked, or a Deferred of it, never
        later than C{budget} seconds from C{now}.
        """


class IDirectoryUsers(Interface):
    """
    The users the table lacks, asked for one at a time in the name
    service's threads, and the learned users' confirmation after a
    reload.
    """

    lookups = Attribute("The UserLookups.")

    def find_uid(uid):
        """
        Return the C{(state, i)} of a uid the table lacks, None, or a
        Deferred of one of them.
        """

    def find_name(name):
        """
        The same for a name.
        """

    def confirm(state, i):
        """
        Ask the name service again for a learned user kept across a reload.
        """

    def needs_groups(user, spool):
        """
        Return whether C{user}'s groups must be asked for before its check.
        """

    def look_up_groups(user, spool, now, budget):
        """
        Ask for C{user}'s groups; return a Deferred firing with whether
        they are known, or False at once if the lookup is refused.
        """

    def listed_learned(table):
        """
        Return the uids of the learned users C{table} lists (in a
        reload's thread).
        """

    def carry_across(state, listed):
        """
        Keep the learned users across a reload installing C{state}.
        """

    def reloaded():
        """
        The table was reloaded: found users are asked for again.
        """


class IReloads(Interface):
    """
    The user table's reloads.
    """

    def reload(loader):
        """
        Load a new table with C{loader()} in a thread and swap it in;
        return a Deferred of the new table, or of None.
        """

    def set_table(table):
        """
        Swap in C{table} now, in the calling thread.
        """


class IOperatorViews(Interface):
    """
    What the operator sees: the status report, the console and the
    metrics read these.
    """

    def status():
        """
        Return name/value pairs for the status report.
        """

    def stats_dict():
        """
        Return every counter by name.
        """

    def cache_entry(uid):
        """
        Return the CacheEntry of C{uid}, or None.
        """

    def describe(uid):
        """
        Return C{(state, age)} of C{uid} for the SIGUSR1 dump.
        """

    def in_flight():
        """
        Return the jobs in flight.
        """

    def hung():
        """
        Return the jobs running longer than the deadline.
        """

    def user_source():
        """
        Return name/value pairs about where the users come from.
        """
