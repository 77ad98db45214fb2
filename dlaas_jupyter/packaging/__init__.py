"""Turning code and an FfDL manifest into what the Trainer accepts: a model-definition
zip and a CreateRequest."""

from dlaas_jupyter.packaging.archive import ArchiveError, read_zip_or_folder, zip_folder
from dlaas_jupyter.packaging.manifest import (
    ManifestError,
    load_manifest,
    manifest_to_request,
    parse_size,
)

__all__ = [
    "ArchiveError",
    "ManifestError",
    "load_manifest",
    "manifest_to_request",
    "parse_size",
    "read_zip_or_folder",
    "zip_folder",
]
