"""
/proc/mounts lines as the kernel writes them, for the mount checks.
"""

HLFS_LINE = (
    "127.0.0.1:/mail /mail nfs rw,sync,relatime,vers=3,rsize=8192,wsize=8192,namlen=255,"
    "acregmin=0,acregmax=0,acdirmin=0,acdirmax=0,hard,noac,nolock,proto=tcp,port=40123,"
    "timeo=600,retrans=2,sec=sys,mountaddr=127.0.0.1,mountvers=3,mountport=40123,"
    "mountproto=tcp,lookupcache=none,local_lock=all,addr=127.0.0.1 0 0"
)


DEFAULT_NFS4_LINE = (
    "server:/export /srv/export nfs4 rw,relatime,vers=4.2,rsize=1048576,wsize=1048576,"
    "namlen=255,hard,proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=127.0.0.1,"
    "local_lock=none,addr=127.0.0.1 0 0"
)
