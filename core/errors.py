"""Errors that reach the user as one clear line."""


class VnodeError(Exception):
    """Something the user must fix; the CLI prints it on one line."""

    exit_code = 1


class UsageError(VnodeError):
    """Bad input (malformed spec, unknown distro, broken config); nothing was touched."""

    exit_code = 2


class EnvironmentProblem(VnodeError):
    """The host is not ready (libvirtd down, image missing); found before anything is done."""

    exit_code = 1
