from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IServiceMaker)
class HLFSServiceMaker:
    """
    C{twistd hlfs}: L{hlfs.daemon.tap}'s options and service, imported
    only when used.  A bad option is one line and exit status 2
    (L{hlfs.daemon.tap.TwistdOptions}).
    """

    tapname = "hlfs"
    description = "The Home-Link File System: per-user mail spool links over NFS."

    @property
    def options(self):
        from hlfs.daemon.tap import TwistdOptions

        return TwistdOptions

    def makeService(self, options):
        from hlfs.daemon.tap import makeService

        return makeService(options)


HLFS = HLFSServiceMaker()
