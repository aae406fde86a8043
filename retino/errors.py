"""The mistakes a user can make, as exceptions whose message is the whole story.

A stage catches these (``retino.stage.run_stage``) and prints the message alone,
never a traceback: each one names the key, file or row and what is allowed.
"""

from __future__ import annotations


class ParamsError(ValueError):
    """params.yaml holds a value the pipeline cannot run with."""


class DataError(ValueError):
    """The data on disk is not what the pipeline can use; the message says where."""


class WeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for but cannot be found, downloaded or used."""


class TrainingDiverged(RuntimeError):
    """The training loss stopped being a number: the weights are lost, nothing is saved."""


USER_ERRORS = (ParamsError, DataError, WeightsUnavailable, TrainingDiverged,
               FileNotFoundError)


def brief(error: BaseException) -> str:
    """``Type: first sentence`` of a library's error, for a one-line message (torch's
    own texts run to a page)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text.split('. ')[0][:120]}".rstrip(": ")
