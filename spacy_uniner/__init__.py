"""spacy-uniner: open-type named entity recognition for spaCy (UniversalNER recipe).

Messages: things a user can fix in their input or config are ``warnings.warn``
(spaCy's convention); progress and details go to the logger ``spacy_uniner``
(INFO). That logger has no handler of its own, not even a NullHandler: an
application that configures logging decides where its records go, and one that
does not still sees warnings on stderr (Python's last-resort handler).
"""

from . import registry  # noqa: F401  (creates registry.uniner_models)
from .component import UniversalNER, make_universal_ner
from .default_student import DEFAULT_MODEL, default_student_path, ensure_default_student
from .evaluation.scoring import make_uniner_scorer
from .models.base import Generation, Student
from .models.hf import HFStudent, make_hf_student_v1

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "Generation",
    "HFStudent",
    "Student",
    "UniversalNER",
    "default_student_path",
    "ensure_default_student",
    "make_hf_student_v1",
    "make_uniner_scorer",
    "make_universal_ner",
]
