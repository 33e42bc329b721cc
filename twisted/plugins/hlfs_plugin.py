from twisted.application.service import ServiceMaker

HLFS = ServiceMaker(
    "hlfs", "hlfs.daemon.tap", "The Home-Link File System: per-user mail spool links over NFS.", "hlfs"
)
