"""Errors that carry one clear sentence for the user.

The CLI turns `ConfigError` into a usage error (exit 2) and every other `NluDeployError`
into a plain error (exit 1). Anything else is a bug and keeps its traceback.
"""

import errno


class NluDeployError(Exception):
    """A problem the user can fix: bad input, missing file, unavailable hardware."""


class ConfigError(NluDeployError):
    """An option value or combination of options that makes no sense."""


class DataError(NluDeployError):
    """A data file that is missing, unreadable, malformed or inconsistent."""


class ModelError(NluDeployError):
    """A model directory or ONNX file that is missing, corrupt or of the wrong kind."""


class ProviderError(NluDeployError):
    """An execution device (CUDA, TensorRT) that was asked for but is not available."""


class ValidationFailed(NluDeployError):
    """At least one ONNX variant lost more of the task score than allowed."""


# A full disk, a full quota, a file-size limit: the same remedy (cli.py says it in one sentence).
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def out_of_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in OUT_OF_SPACE
