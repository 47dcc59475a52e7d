"""Teacher annotation: corpus → passages → LLM teacher (Fig. 1) → parsed, filtered, cached data.

Entry point: ``python -m ray_jobs.annotate``; the logic is here so it can be
tested without Ray: :mod:`.corpus` (reading the corpus, the sample; passages
are cut by :mod:`spacy_uniner.passages`), :mod:`.prompt`, :mod:`.filters`,
:mod:`.client` (backends, retries), :mod:`.limiter` (the shared rate limit),
:mod:`.cache`, :mod:`.stats` (Tab. 1), :mod:`.run` (the Ray job), :mod:`.replay`
(the local replay teacher) and :mod:`.llm_model` (spacy-llm); the replay teacher
is served by :mod:`spacy_uniner.openai_server`.
"""

from ..passages import Chunker, Passage
from .cache import ReplyCache, cache_key
from .client import OpenAITeacher, Secret, SpacyLLMTeacher, TeacherConfig
from .corpus import CorpusReport, Document, read_documents, sample_passages
from .filters import DROP_REASONS, FilteredReply, filter_reply
from .limiter import RateLimiter
from .prompt import PROMPT_VERSIONS, TeacherPrompt
from .run import AnnotateOptions, annotate
from .stats import format_summary, head_tail_table

__all__ = [
    "DROP_REASONS",
    "PROMPT_VERSIONS",
    "AnnotateOptions",
    "Chunker",
    "CorpusReport",
    "Document",
    "FilteredReply",
    "OpenAITeacher",
    "Passage",
    "RateLimiter",
    "ReplyCache",
    "Secret",
    "SpacyLLMTeacher",
    "TeacherConfig",
    "TeacherPrompt",
    "annotate",
    "cache_key",
    "filter_reply",
    "format_summary",
    "head_tail_table",
    "read_documents",
    "sample_passages",
]
