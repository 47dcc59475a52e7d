"""The registry of model backends: ``@uniner_models = "spacy_uniner.HFStudent.v2"``.

Backends are versioned functions declared under the entry-point group
``thinc_uniner_models`` (spaCy creates custom registries in thinc's
namespace), so a config naming one resolves in a fresh process.
"""

from spacy.util import registry

if not hasattr(registry, "uniner_models"):
    registry.create("uniner_models", entry_points=True)

uniner_models = registry.uniner_models

__all__ = ["registry", "uniner_models"]
