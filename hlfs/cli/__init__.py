"""
The commands: C{hlfs} and its subcommands (resolve, status, demo, deliver,
lostmail, check) and C{hlfsd}, am-utils' command line translated to twistd.
The top of the house: it may import every other part.
"""
