"""
Argument parsing shared by the C{hlfs} subcommands.
"""

import argparse


class UsageError(Exception):
    """
    A subcommand's arguments or configuration are unusable; the message
    says why, in one line.
    """


class ArgumentParser(argparse.ArgumentParser):
    """
    An argument parser that raises L{UsageError} instead of exiting, so a
    subcommand can choose its own exit status (sysexits for mail tools).
    """

    def error(self, message):
        raise UsageError(message)
