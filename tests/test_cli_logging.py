"""What a Python user and a command-line user see: warnings visible, libraries quiet."""

import logging
import subprocess
import sys
import warnings

import pytest

from spacy_uniner.cli_logging import configure_cli_logging


def test_package_warnings_reach_a_python_user_without_logging_set_up():
    code = (
        "import logging, spacy_uniner\n"
        "log = logging.getLogger('spacy_uniner')\n"
        "log.warning('a warning for the user')\n"
        "log.info('a detail')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "a warning for the user" in result.stderr and "a detail" not in result.stderr
    # an application that configures logging decides: no second copy on stderr
    configured = subprocess.run(
        [sys.executable, "-c", "import logging; logging.basicConfig(format='app: %(message)s')\n"
         + code], capture_output=True, text=True, timeout=120)
    assert configured.stderr.count("a warning for the user") == 1
    assert "app: a warning for the user" in configured.stderr


def test_the_cli_silences_library_noise_unless_verbose(cli_logging_restored):
    from transformers.utils import logging as hf_logging

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # not the test suite's own filters
        configure_cli_logging(verbose=False)
        for module in ("transformers.modeling_utils", "peft.tuners", "spacy_uniner.models.hf"):
            warnings.warn_explicit("deprecated", FutureWarning, "x.py", 1, module=module)
    assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.get_verbosity() == logging.ERROR
    # only our own FutureWarning (a retired setting the user gave) stays visible
    assert [str(w.message) for w in caught] == ["deprecated"]
    assert logging.getLogger("spacy_uniner").getEffectiveLevel() == logging.WARNING


def test_verbose_keeps_everything(cli_logging_restored):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    configure_cli_logging(verbose=True)
    assert hf_logging.is_progress_bar_enabled()
    assert logging.getLogger("spacy_uniner").getEffectiveLevel() == logging.INFO


@pytest.mark.parametrize("module", ["transformers.x", "torch.nn", "accelerate", "huggingface_hub"])
def test_quiet_modules(module, cli_logging_restored):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        configure_cli_logging(verbose=False)
        warnings.warn_explicit("old", DeprecationWarning, "x.py", 1, module=module)
        warnings.warn_explicit("ours", DeprecationWarning, "x.py", 1, module="spacy_uniner.x")
    assert [str(w.message) for w in caught] == ["ours"]
