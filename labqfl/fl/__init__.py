"""Federated learning with QKD-keyed secure aggregation.

Secure aggregation (framework-free, numpy only; see ``docs/secure_aggregation.md``):

- :class:`SecAggConfig`, :func:`secure_round`, :class:`RoundResult` — one masked FedAvg round;
- :mod:`labqfl.fl.quantize` — clip, quantise, bit budget, weighted ranges, dequantise;
- :mod:`labqfl.fl.masks` — mask graphs, :func:`mask_update` (client), :func:`aggregate` (server,
  with dropout recovery);
- :mod:`labqfl.fl.keysource` — :class:`KeySource`, :class:`KeyStoreKeySource` (``qkd``),
  :class:`CsprngKeySource` (``csprng``), :func:`make_key_source`.

Models, datasets and training live in :mod:`labqfl.fl.models`, :mod:`labqfl.fl.datasets` and
:mod:`labqfl.fl.training` (imported on demand: this package import stays light, no torch).
"""

from labqfl.fl.keysource import (
    CsprngKeySource,
    KeySource,
    KeyStoreKeySource,
    StarvationProgress,
    key_words,
    make_key_source,
    take_master_keys,
    take_slave_keys,
)
from labqfl.fl.masks import (
    aggregate,
    dangling_pairs,
    mask_graph,
    mask_update,
    pair_mask,
    words_from_bits,
)
from labqfl.fl.quantize import dequantize, dequantize_sum, quantize, value_bits, weight_ranges
from labqfl.fl.secure import RoundResult, SecAggConfig, secure_round

__all__ = [
    "CsprngKeySource",
    "KeySource",
    "KeyStoreKeySource",
    "RoundResult",
    "SecAggConfig",
    "StarvationProgress",
    "aggregate",
    "dangling_pairs",
    "dequantize",
    "dequantize_sum",
    "key_words",
    "make_key_source",
    "mask_graph",
    "mask_update",
    "pair_mask",
    "quantize",
    "secure_round",
    "take_master_keys",
    "take_slave_keys",
    "value_bits",
    "weight_ranges",
    "words_from_bits",
]
