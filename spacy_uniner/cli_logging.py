"""What the command lines print: our progress, warnings and summary, not other libraries' noise.

Used by ``uniner`` and the ``ray_jobs`` entry points (and, through
``ExtractOptions.quiet``, by the Ray actors of an extraction), never at import time
of the library: a Python user's own logging and warning filters are left alone.
``--verbose`` keeps everything.
"""

import logging
import warnings

LOG_FORMAT = "%(levelname)s %(message)s"
#: Libraries whose deprecation warnings are about their own internals, not the user's code.
_QUIET_MODULES = r"(transformers|peft|torch|accelerate|huggingface_hub)(\.|$)"


def configure_cli_logging(verbose: bool = False) -> None:
    """Log WARNING and above (``verbose``: our INFO too) to stderr; unless ``verbose``,
    silence the libraries that print while a student loads (:func:`quiet_libraries`)."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    logging.getLogger("spacy_uniner").setLevel(logging.INFO if verbose else logging.NOTSET)
    if not verbose:
        quiet_libraries()


def quiet_libraries() -> None:
    """In this process: no transformers "Loading weights" bar or INFO/WARNING lines
    (errors still show), and no FutureWarning/DeprecationWarning raised inside
    transformers, peft, torch, accelerate or huggingface_hub."""
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=_QUIET_MODULES)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # an OpenAI-compatible student needs no transformers
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def quiet_ray() -> int:
    """Ray's start-up and Ray Data's per-dataset INFO lines to WARNING/ERROR.

    RETURNS (int): the ``logging_level`` to give ``ray.init``."""
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return logging.WARNING
