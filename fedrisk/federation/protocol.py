"""Protocol strings between ClientApp and ServerApp: message types, record keys, metric names.

Defined once here so the party and the server cannot drift apart.
"""

from __future__ import annotations

from typing import Final

# Message types (Flower routes "<category>.<action>" to the matching ClientApp handler).
MSG_STATS: Final = "query.stats"
MSG_TRAIN: Final = "train"
MSG_EVALUATE: Final = "evaluate"
MSG_METRICS: Final = "query.metrics"
MSG_RELEASE: Final = "query.release"
MSG_TREE: Final = "query.tree"
MSG_ALIGN: Final = "query.align"
MSG_UNMASK: Final = "query.unmask"
"""Asked of a masked exchange's survivors when parties dropped: reveal shares of the seeds
between the dropped parties and the survivors (:mod:`secure_agg.masking`)."""

# Record keys inside a message's RecordDict.
CONFIG: Final = "config"
METRICS: Final = "metrics"
ENC_STATS: Final = "enc-stats"
ENC_GLOBAL: Final = "enc-global"
ENC_UPDATE: Final = "enc-update"
ENC_HIST: Final = "enc-hist"
ENC_TREE: Final = "enc-tree"
ENC_TREE_STATE: Final = "enc-tree-state"
"""A party's boosting state after a finished tree, serialized and encrypted: the release party
sends it for the coordinator's checkpoint; a resumed run sends it back to every party."""
ENC_POOLED_HIST: Final = "enc-pooled-hist"
"""The pooled histograms of an earlier round, sent to the one party that decrypts its metrics;
it answers with :data:`METRICS` beside whatever else the message asked for."""

PSI_POINTS: Final = "psi-points"
"""Blinded identifier lists of the ``align`` phase (:mod:`secure_agg.psi`), one array per list."""
PSI_SEALED: Final = "psi-sealed"
"""The guest's match results, each sealed for one host."""
# Arrays inside PSI_POINTS / PSI_SEALED (a guest's offer holds one per host slot, named "<slot>").
PSI_OWN: Final = "own"
PSI_GUEST: Final = "guest"
PSI_DOUBLE: Final = "double"
PSI_RESULT: Final = "result"


def psi_slot_key(kind: str, slot: int) -> str:
    """The array holding host slot ``slot``'s list of ``kind`` in a ``match`` message."""
    return f"{kind}/{slot}"


def align_channel_key(slot: int) -> str:
    """The config key of the guest's channel public key for host slot ``slot``."""
    return f"{CFG_ALIGN_CHANNEL}/{slot}"


MASK_SHARES: Final = "mask-shares"
"""ConfigRecord of sealed Shamir shares: recipient → bytes in a reply; sender → bytes in an
unmask query (only the named recipient can open each)."""
MASK_REVEALED: Final = "mask-revealed"
"""ConfigRecord of a survivor's revealed shares: pair name → share bytes."""

# ConfigRecord keys.
CFG_ROUND: Final = "round"
CFG_RUN_ID: Final = "run-id"
CFG_PARTY: Final = "party"
CFG_HISTORY: Final = "history"
CFG_PARTIES: Final = "parties"
CFG_MODEL_ID: Final = "model-id"
CFG_ARTIFACT_SHA256: Final = "artifact-sha256"
CFG_TREE_DONE: Final = "tree-done"
CFG_TREE_REPORT: Final = "tree-report"
CFG_EVALUATE: Final = "evaluate"
"""True in a ``train`` message whose starting global model the party also evaluates: round r's
model is evaluated in round r + 1's message, so a round costs one exchange."""

CFG_ALIGN_STEP: Final = "align-step"
CFG_ALIGN_GUEST: Final = "align-guest"
CFG_ALIGN_SLOTS: Final = "align-slots"
CFG_ALIGN_HOSTS: Final = "align-hosts"
CFG_ALIGN_ID_COLUMN: Final = "align-id-column"
CFG_ALIGN_ID_KIND: Final = "align-id-kind"
CFG_ALIGN_COUNTRY_CODE: Final = "align-country-code"
CFG_ALIGN_CHANNEL: Final = "align-channel"
CFG_ALIGN_ROWS: Final = "align-rows"
# Fields of each entry of CFG_ALIGN_HOSTS (a JSON list).
ALIGN_HOST_SLOT: Final = "slot"
ALIGN_HOST_NAME: Final = "name"
ALIGN_HOST_CHANNEL: Final = "channel"

# Steps of the ``align`` phase, in order (see ``server.coordinator.alignment``).
ALIGN_OFFER: Final = "offer"
ALIGN_REBLIND: Final = "reblind"
ALIGN_MATCH: Final = "match"
ALIGN_FINISH: Final = "finish"
CFG_MASK: Final = "mask"
"""JSON of a masked exchange's plan: its label, threshold, participants per purpose (``null``:
every party of the federation) and, in an unmask query, the dropped parties."""

# Masking purposes: one mask stream per purpose within an exchange.
PURPOSE_STATS: Final = "stats"
PURPOSE_UPDATE: Final = "update"
PURPOSE_HIST: Final = "hist"
PURPOSE_TREE: Final = "tree"

# Metric names.
METRIC_AUC: Final = "auc"
METRIC_KS: Final = "ks"
METRIC_PARTIES: Final = "n-parties"

# A party that refuses to join (its data failed validation) raises an error whose text starts
# with this mark; the server excludes that party for the rest of the run.
REFUSAL_MARK: Final = "PARTY-REFUSED:"
