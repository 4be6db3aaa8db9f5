"""YAML documents → the frozen desired state; the only place that validates input.

``load_paths`` / ``load_text`` check every document and report every error with
file, line, column and field path (``ConfigError``); ``service_to_dict`` writes a
``ModelService`` back in its YAML shape; ``modelservice_json_schema`` exports the
document schema. New document kinds plug in through ``register_kind``.
"""

from controlplane.config.errors import ConfigError
from controlplane.config.kinds import Document, KindDef, known_kinds, register_kind
from controlplane.config.loader import LoadedObject, LoadResult, load_paths, load_text
from controlplane.config.schema import modelservice_json_schema
from controlplane.config.writer import service_to_dict

__all__ = [
    "ConfigError",
    "Document",
    "KindDef",
    "LoadResult",
    "LoadedObject",
    "known_kinds",
    "load_paths",
    "load_text",
    "modelservice_json_schema",
    "register_kind",
    "service_to_dict",
]
