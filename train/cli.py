"""What every command line of the zoo shares: the one-line usage error and
its exit code, and the check for stray positional arguments."""

import sys

USAGE_ERROR = 2  # the exit code of a command given options it cannot run


def fail(message):
    """Prints `error: message` on one line to stderr and exits with USAGE_ERROR."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def no_positional_arguments(argv):
    """fail() for arguments after the program name that are not --name=value options."""
    if len(argv) > 1:
        fail(f"unexpected arguments {' '.join(argv[1:])}; options are --name=value")
