"""Key store: pairwise key pools per node on SQLite, consume-once, crash-safe; ETSI GS QKD 014
key delivery (:mod:`labqfl.keystore.etsi`).  See docs/keystore.md."""

from labqfl.keystore.material import KeyMaterial, Ref, normalize_refs, refs_nbits
from labqfl.keystore.store import (
    APPLICATION_ID,
    DATA_DIR_ENV,
    GENERAL,
    PURPOSES,
    SCHEMA_VERSION,
    ExportBinding,
    ExportedSegment,
    ImportTicket,
    KeyStore,
    default_data_dir,
    list_node_stores,
    node_store_path,
    open_node_stores,
)

__all__ = [
    "APPLICATION_ID", "DATA_DIR_ENV", "GENERAL", "PURPOSES", "SCHEMA_VERSION", "ExportBinding", "ExportedSegment",
    "ImportTicket", "KeyMaterial", "KeyStore", "Ref", "default_data_dir", "list_node_stores", "node_store_path", "normalize_refs",
    "open_node_stores", "refs_nbits",
]
