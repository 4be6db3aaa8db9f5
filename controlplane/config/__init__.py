"""YAML documents → frozen objects; the only place that validates input.

``load_paths`` / ``load_text`` check every document on its own and report every
error with file, line, column and field path (``ConfigError``); ``assemble``
turns a load (and what served before) into the effective objects, freezing
only the documents with errors. ``service_to_dict`` writes a ``ModelService``
back in its YAML shape; ``json_schema`` exports a kind's document schema. New
document kinds plug in through ``register_kind``.
"""

from controlplane.config.assemble import Assembly, ObjectState, ObjectStatus, assemble
from controlplane.config.errors import ConfigError
from controlplane.config.experiment import EXPERIMENT
from controlplane.config.kinds import (
    Document,
    KindDef,
    LoadedObject,
    known_kinds,
    register_kind,
)
from controlplane.config.loader import (
    DocumentResult,
    LoadResult,
    load_documents,
    load_paths,
    load_text,
)
from controlplane.config.modelservice import MODEL_SERVICE
from controlplane.config.schema import json_schema, modelservice_json_schema
from controlplane.config.writer import service_to_dict

register_kind(MODEL_SERVICE)
register_kind(EXPERIMENT)

__all__ = [
    "Assembly",
    "ConfigError",
    "Document",
    "DocumentResult",
    "KindDef",
    "LoadResult",
    "LoadedObject",
    "ObjectState",
    "ObjectStatus",
    "assemble",
    "json_schema",
    "known_kinds",
    "load_documents",
    "load_paths",
    "load_text",
    "modelservice_json_schema",
    "register_kind",
    "service_to_dict",
]
