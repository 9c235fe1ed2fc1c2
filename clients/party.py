"""A party's configuration and the local work behind each federated message.

Everything here runs beside the party's own data: reading and validating it, fitting the shared
preprocessor from the decrypted statistics sum, training, evaluating, and releasing the model.
Only encrypted vectors leave (built by ``secure_agg``), plus the party's name and, on the
metrics party's answers, the pooled AUC/KS that every party agreed to publish.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError

from fedrisk.data.schema import DatasetSchema, load_schema
from fedrisk.data.validation import load_party_frame
from fedrisk.errors import FedRiskError, SchemaError
from fedrisk.federation.protocol import PURPOSE_HIST, PURPOSE_STATS, PURPOSE_UPDATE
from fedrisk.federation.run_config import FederationConfig
from fedrisk.ml.features import FeatureStats, Preprocessor
from fedrisk.ml.inference import ModelSpec, logit_offset_for, pos_weight_for
from fedrisk.ml.kinds import network_kind
from fedrisk.ml.metrics import auc_from_histograms, ks_from_histograms, score_histograms
from fedrisk.ml.pipeline import FeatureEncoder, RiskPipeline
from fedrisk.ml.privacy import noisy_client_update
from fedrisk.ml.server_optimizers import GlobalModel, ServerOptimizer
from fedrisk.ml.trees import TREE_STATS_BINS
from fedrisk.ml.woe import BinningConfig, ScorecardStats, WoeEncoder, scorecard_statistics
from fedrisk.release.artifact import (
    Lineage,
    ModelArtifact,
    PrivacyRecord,
    RoundMetrics,
    artifact_from_pipeline,
    write_artifact,
)
from fedrisk.release.identity import (
    load_receiving_key,
    load_signing_key,
    receiving_public_key_from_pem,
)
from fedrisk.release.reference import (
    ScoreReference,
    feature_reference,
    reference_from_histograms,
)
from secure_agg.aggregation import (
    CkksAggregation,
    FloatVector,
    InsecurePlainAggregation,
    VectorAggregation,
    unweight_sum,
    weight_update,
)
from secure_agg.keys import load_secret_context
from secure_agg.masking import (
    MIN_MASKED_PARTIES,
    MaskIdentity,
    MaskingError,
    MaskPlan,
    chunk_masks,
    new_self_seed,
    share_seeds,
    threshold_for,
)
from secure_agg.params import HEParams

log = logging.getLogger(__name__)

STATS_BINS = 64
HIST_BINS = 2000
PARTY_CONFIG_FILE = "party.toml"


class PartyRefusedError(FedRiskError, ValueError):
    """The party will not join: its data or its configuration is invalid."""


class PartyConfig(BaseModel):
    """Where a party's data, schema and keys live (``party.toml``, kept beside the data).

    Notes
    -----
    ``secret_context`` and ``signing_key`` are paths to files of mode 0600 that never leave the
    party; this config holds paths only, so it can be logged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    train: Path
    test: Path
    schema_file: Path
    secret_context: Path | None = None
    signing_key: Path | None = None
    release_dir: Path | None = None
    identifier_key: Path | None = None
    """The federation's identifier key file (``IdentifierKey.save``), when the parties share no
    CKKS secret context to derive it from (``clients.alignment.identifier_key``)."""
    he_params: HEParams = HEParams()
    receiving_key: Path | None = None
    """The party's X25519 key (mode 0600): its pairwise mask seeds and sealed shares."""
    peer_keys: Path | None = None
    """JSON of every federation party's X25519 public key (PEM) by name, from the manifest."""
    roster: Path | None = None
    """Every party's Ed25519 verify key: the provisioned manifest (deployment) or a folder of
    ``<party>.pub`` keys (simulation); relayed public keys are checked against it
    (:mod:`fedrisk.federation.published_keys`)."""
    vertical: Path | None = None
    """A vertical party's ``vertical.json`` (``clients.vertical_party.VerticalPartyConfig``):
    its own columns, role and CKKS key; ``train`` is then its own table."""


def load_party_config(path: Path) -> PartyConfig:
    """Read ``party.toml``; relative paths are taken relative to its folder."""
    import tomllib

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise PartyRefusedError(f"party config {path} cannot be read: {e}") from e
    for key in (
        "train",
        "test",
        "schema_file",
        "secret_context",
        "signing_key",
        "release_dir",
        "identifier_key",
        "receiving_key",
        "peer_keys",
        "roster",
        "vertical",
    ):
        if key in raw and not Path(raw[key]).is_absolute():
            raw[key] = str(path.parent / raw[key])
    try:
        return PartyConfig.model_validate(raw)
    except ValidationError as e:
        raise PartyRefusedError(f"party config {path} is invalid: {e}") from e


_SERVED_PARTY: list[PartyConfig] = []
"""The party this process serves, set once by the party's warm executor (``serve_party``)."""


def serve_party(config: PartyConfig) -> None:
    """Make ``config`` the party every ClientApp call in this process runs as.

    Notes
    -----
    The party's warm executor calls this with the ``party.toml`` from its own command line, so
    the paths to the party's data and keys reach our ClientApp in-process and never travel in
    ``context.node_config``, which any app the SuperNode ran would receive.
    """
    _SERVED_PARTY[:] = [config]


def resolve_party_config(
    node_config: Mapping[str, object], federation: FederationConfig
) -> PartyConfig:
    """The party served by this process (deployment: set by the executor); simulated nodes use
    their partition id."""
    if _SERVED_PARTY:
        return _SERVED_PARTY[0]
    if federation.sim_workspace and "partition-id" in node_config:
        pid = int(str(node_config["partition-id"]))
        path = Path(federation.sim_workspace) / "parties" / f"party_{pid}" / PARTY_CONFIG_FILE
        return load_party_config(path)
    raise PartyRefusedError(
        "the party must be served by its executor (deployment) or the run must set "
        f"sim-workspace (simulation); got node config keys {sorted(node_config)}"
    )


@dataclass(frozen=True)
class ReleaseRecord:
    """What a released artifact records besides its model (see :meth:`PartyNode.release_record`)."""

    model_id: str
    metrics: list[RoundMetrics]
    he_params: dict[str, Any] | None
    lineage: Lineage
    privacy: PrivacyRecord | None = None


@dataclass(frozen=True)
class LocalData:
    """A party's validated training and test frames and its schema."""

    schema: DatasetSchema
    train: pd.DataFrame
    test: pd.DataFrame


@functools.lru_cache(maxsize=8)
def _load_local_data(config: PartyConfig, stamp: tuple[int, int]) -> LocalData:
    del stamp  # part of the cache key only: a changed file is read again
    schema = load_schema(config.schema_file)
    try:
        train = load_party_frame(config.train, schema)
        test = load_party_frame(config.test, schema)
    except FedRiskError as e:
        raise PartyRefusedError(f"party {config.name}: {e}") from e
    return LocalData(schema=schema, train=train, test=test)


def load_local_data(config: PartyConfig) -> LocalData:
    """Read and validate the party's files (cached while the files are unchanged)."""
    try:
        stamp = (config.train.stat().st_mtime_ns, config.test.stat().st_mtime_ns)
    except OSError as e:
        raise PartyRefusedError(f"party {config.name}: data file missing: {e}") from e
    return _load_local_data(config, stamp)


# Sized for every party of a simulation: one process (a Ray actor) answers for all of them,
# and a cache smaller than the party count evicts each party's entry before it is asked again.
@functools.lru_cache(maxsize=16)
def _aggregation(secret_context: Path | None, plaintext: bool) -> VectorAggregation:
    if plaintext:
        return InsecurePlainAggregation()
    if secret_context is None:
        raise PartyRefusedError("secret_context must be set in party.toml for an encrypted run")
    return CkksAggregation(load_secret_context(secret_context))


def warm_up(config: PartyConfig) -> None:
    """Load into this process what every message of a run needs, before the first one arrives.

    The party's validated data and its CKKS secret context go into this module's caches, and
    torch is imported and run through one optimiser step (its first step in a process costs
    about 2 s). A long-lived worker (``clients.executor``) calls this once at start-up.

    Raises
    ------
    PartyRefusedError
        The data or the secret context cannot be read.
    """
    if config.vertical is not None:
        # A vertical party's table follows its own columns, not the federation's schema; its
        # steps load it (and no torch) on first use.
        return
    import torch

    from fedrisk.ml.training import configure_torch

    load_local_data(config)
    if config.secret_context is not None:
        _aggregation(config.secret_context, False)
    configure_torch(threads=1)
    layer = torch.nn.Linear(2, 1)
    optimiser = torch.optim.Adam(layer.parameters())
    layer(torch.zeros(1, 2)).sum().backward()
    optimiser.step()


@functools.lru_cache(maxsize=16)
def _peer_keys(path: Path, stamp: int) -> dict[str, X25519PublicKey]:
    del stamp  # part of the cache key only
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {
            str(name): receiving_public_key_from_pem(str(pem), source=f"{path} [{name}]")
            for name, pem in dict(raw).items()
        }
    except (OSError, ValueError, TypeError, FedRiskError) as e:
        raise PartyRefusedError(
            f"peer_keys {path} must be JSON of party name → X25519 public key PEM; got {e}"
        ) from e


def mask_identity(config: PartyConfig, run: str) -> MaskIdentity:
    """The party's masking identity for run ``run`` (its X25519 key and its peers' keys).

    Raises
    ------
    PartyRefusedError
        ``receiving_key`` or ``peer_keys`` is not set or cannot be read.
    """
    if config.receiving_key is None or config.peer_keys is None:
        raise PartyRefusedError(
            f"party {config.name}: receiving_key and peer_keys must be set in party.toml for a "
            "masked run"
        )
    try:
        stamps = (config.receiving_key.stat().st_mtime_ns, config.peer_keys.stat().st_mtime_ns)
    except OSError as e:
        raise PartyRefusedError(f"party {config.name}: masking keys unreadable: {e}") from e
    return _run_identity(config, run, stamps)


@functools.lru_cache(maxsize=16)
def _run_identity(config: PartyConfig, run: str, stamps: tuple[int, int]) -> MaskIdentity:
    """One identity per party and run in this process: it derives its X25519 secrets, pair
    seeds and seal keys once, not per message (``stamps``: the key files' mtimes)."""
    assert config.receiving_key is not None and config.peer_keys is not None
    try:
        private = load_receiving_key(config.receiving_key)
    except (OSError, FedRiskError) as e:
        raise PartyRefusedError(f"party {config.name}: masking keys unreadable: {e}") from e
    peers = _peer_keys(config.peer_keys, stamps[1])
    if config.name not in peers:
        raise PartyRefusedError(
            f"peer_keys must list this party {config.name!r}; got {sorted(peers)}"
        )
    return MaskIdentity(name=config.name, run_id=run, private_key=private, peers=peers)


class PartyNode:
    """One party's side of every message type; holds no state between messages.

    The ClientApp hands it the decrypted statistics sum and global model each message names
    (decrypted from the attached ciphertext, or cached in the run's ``Context.state`` by
    :mod:`secure_agg.record_cache`); a party that restarts or joins late is sent them again.
    """

    def __init__(self, config: PartyConfig, federation: FederationConfig) -> None:
        self.config = config
        self.federation = federation
        self.data = load_local_data(config)
        self.channel = _aggregation(config.secret_context, federation.plaintext)
        self._masking: tuple[MaskIdentity, MaskPlan] | None = None
        self._masked = False
        # This message's private self seed: fresh per message, gone with the node.
        self._self_seed = new_self_seed() if federation.mask_self else None
        self.masks_used: dict[str, str] = {}

    # ----------------------------------------------------------------- masking

    def use_masks(self, plan: MaskPlan, *, run: str, used: dict[str, str]) -> None:
        """Mask what this message's answer encrypts, as ``plan`` says (encrypted runs only).

        ``used`` maps ``exchange|purpose`` to the digest of the vector this party masked there
        in this run (kept in the run's ``Context.state``); it is updated as vectors are masked.
        """
        if not self.federation.masked:
            raise PartyRefusedError("the message asks for masks but this run has masking off")
        self._masking = (mask_identity(self.config, run), plan)
        self.masks_used = used

    @property
    def mask_identity(self) -> MaskIdentity | None:
        """The identity masks of this message are made with, if the message asked for masks."""
        return None if self._masking is None else self._masking[0]

    def encode(self, vec: Any, purpose: str) -> Any:
        """Encrypt ``vec`` for sending; masked for ``purpose`` when the message asked for masks
        and at least 3 parties take part (:mod:`secure_agg.masking`)."""
        if self._masking is None:
            return self.channel.encode(vec)
        identity, plan = self._masking
        try:
            members = plan.members_of(purpose, identity.peers)
            if len(members) < MIN_MASKED_PARTIES:
                return self.channel.encode(vec)
            masks = chunk_masks(
                identity,
                exchange=plan.exchange,
                purpose=purpose,
                participants=members,
                self_seed=self._self_seed,
            )
        except MaskingError as e:
            raise PartyRefusedError(f"party {self.config.name}: {e}") from e
        # The same masks on two different vectors would reveal their difference: a reused
        # exchange label is accepted only for a resend of the very same vector.
        slot = f"{plan.exchange}|{purpose}"
        digest = hashlib.sha256(np.ascontiguousarray(vec, dtype=np.float64).tobytes()).hexdigest()
        if self.masks_used.setdefault(slot, digest) != digest:
            raise PartyRefusedError(
                f"party {self.config.name}: exchange {plan.exchange!r} must not mask a second, "
                f"different {purpose} vector (its masks would cancel between the two)"
            )
        self._masked = True
        return self.channel.encode(vec, masks=masks)

    def sealed_shares(self) -> dict[str, bytes]:
        """Shamir shares of this exchange's seeds, sealed to each participant; empty if this
        message masked nothing."""
        if self._masking is None or not self._masked:
            return {}
        identity, plan = self._masking
        holders = plan.holders(identity.peers)
        try:
            threshold = threshold_for(self.federation.mask_threshold, len(holders))
            return share_seeds(
                identity,
                exchange=plan.exchange,
                participants=holders,
                threshold=threshold,
                self_seed=self._self_seed,
            )
        except MaskingError as e:
            raise PartyRefusedError(f"party {self.config.name}: {e}") from e

    @property
    def stats_bins(self) -> int:
        """Histogram resolution of the statistics: trees cut their bins on it, so finer."""
        return TREE_STATS_BINS if self.federation.model == "gbdt" else STATS_BINS

    # ----------------------------------------------------------------- phases

    def local_stats(self, pooled: FloatVector | None = None) -> Any:
        """Encrypted additive statistics of the training split.

        A scorecard sends its good and bad rows' statistics; asked again with the decrypted
        ``pooled`` sum of that first pass, it adds the sums of products of the WOE features
        that sum defines (:func:`fedrisk.ml.woe.scorecard_statistics`).
        """
        if self.federation.model == "scorecard":
            config = BinningConfig()
            schema = self.data.schema
            candidate = (
                None
                if pooled is None
                else WoeEncoder(schema, config).fit_stats(
                    ScorecardStats(schema, pooled, n_bins=config.histogram_bins)
                )
            )
            return self.encode(
                scorecard_statistics(
                    self.data.train, schema, n_bins=config.histogram_bins, candidate=candidate
                ),
                PURPOSE_STATS,
            )
        stats = FeatureStats.from_frame(self.data.train, self.data.schema, n_bins=self.stats_bins)
        return self.encode(stats.to_vector(), PURPOSE_STATS)

    def decrypt(self, record: Any) -> FloatVector:
        """Decrypt a record the server sent (a sum of the parties' encrypted vectors)."""
        return self.channel.decode(record)

    def train(self, stats: FloatVector, global_sum: FloatVector | None, rnd: int) -> Any:
        """Train one round locally; return ``n * weights ++ [n]`` encrypted.

        ``stats`` and ``global_sum`` are the decrypted statistics sum and weighted model sum
        (None in round 1).

        Notes
        -----
        torch is imported here only: in deployment every message starts a fresh ClientApp
        process, and the statistics, evaluation, metrics and release messages need no torch.
        """
        import torch

        from fedrisk.ml.dp_sgd import DpSgdEpochs
        from fedrisk.ml.models import initial_weights
        from fedrisk.ml.training import LocalEpochs, configure_torch, default_config

        configure_torch(threads=1)  # small models: one thread beats two on a shared 2-core box
        prep, pooled = self._preprocessor(stats)
        spec = self._spec(prep)
        server = self._server_optimizer
        if global_sum is None:
            # Every party builds the same initial model from the run's seed, so round 1 needs
            # no model from the server.
            start = server.initial(
                initial_weights(spec, generator=torch.Generator().manual_seed(self.federation.seed))
            )
        else:
            start = self._global_model(global_sum)
        config = default_config(self.federation.model).model_copy(update=self._train_overrides())
        # The global bad rate, from the decrypted statistics sum, so every party weighs the
        # classes alike and the released model's offset matches its training.
        pos_weight = pos_weight_for(_positive_rate(pooled))
        plan = self.federation.privacy_plan()
        trainer: LocalEpochs | DpSgdEpochs
        if plan is not None and plan.mode == "sample":
            trainer = DpSgdEpochs(
                config=config,
                # DP's samples and noise come from secret entropy: the run seed is public.
                generator=torch.Generator().manual_seed(secrets.randbits(63)),
                clip_norm=plan.clip_norm,
                noise_multiplier=plan.noise_multiplier,
                sampling_rate=plan.sampling_rate,
                pos_weight=pos_weight,
            )
        else:
            trainer = LocalEpochs(
                config=config,
                generator=torch.Generator().manual_seed(self._seed(rnd)),
                pos_weight=pos_weight,
            )
        pipeline = RiskPipeline.from_fitted(
            prep, spec, start.weights, logit_offset=_logit_offset(pooled), trainer=trainer
        ).partial_fit(self.data.train)
        if plan is not None and plan.mode == "client":
            # Clipped, with this party's share of the noise, and weighted 1: the sum's
            # sensitivity to one party is the clip norm whatever its row count.
            noisy = noisy_client_update(
                start.weights,
                pipeline.weights_,
                plan=plan,
                rng=np.random.default_rng(secrets.randbits(128)),
            )
            return self.encode(weight_update(server.carry(noisy, start), 1), PURPOSE_UPDATE)
        update = weight_update(server.carry(pipeline.weights_, start), len(self.data.train))
        return self.encode(update, PURPOSE_UPDATE)

    def evaluate(self, stats: FloatVector, global_sum: FloatVector) -> Any:
        """Encrypted per-class score histograms of the local test split."""
        p = self._global_pipeline(stats, global_sum).predict_proba(self.data.test)
        y = self.data.test[self._target].to_numpy()
        return self.encode(score_histograms(y, p, n_bins=HIST_BINS).ravel(), PURPOSE_HIST)

    def pooled_histogram(self, enc_hist: Any) -> npt.NDArray[np.float64]:
        """Decrypt the pooled ``(2, HIST_BINS)`` score histograms of every party's test split."""
        hist = np.clip(self.decrypt(enc_hist), 0.0, None).reshape(2, HIST_BINS)
        return np.rint(hist)  # counts came through CKKS with ~1e-8 noise

    def metrics(self, enc_hist: Any) -> tuple[float, float]:
        """Decrypt the pooled histograms: global AUC and KS over every party's test split."""
        return histogram_metrics(self.pooled_histogram(enc_hist))

    def release(
        self,
        stats: FloatVector,
        global_sum: FloatVector,
        *,
        rounds: int,
        history: list[dict[str, Any]],
        parties: list[str],
        hist: npt.NDArray[np.float64] | None = None,
    ) -> tuple[str, Path]:
        """Decrypt the final model and write it as an Ed25519-signed artifact.

        ``hist`` is the final round's decrypted pooled evaluation histograms (the metrics
        party's release message carries them): their reference PD bands go into the artifact,
        for the lender's PSI and bad-rate-by-band monitoring.
        """
        pooled = self.pooled_stats(stats)
        record = self.release_record(pooled, rounds=rounds, history=history, parties=parties)
        artifact = artifact_from_pipeline(
            self._global_pipeline(stats, global_sum),
            model_id=record.model_id,
            stage=self.federation.stage,
            metrics=record.metrics,
            he_params=record.he_params,
            lineage=record.lineage,
            privacy=record.privacy,
            reference=None if hist is None else release_reference(hist, pooled),
        )
        return record.model_id, self.write_release(artifact)

    def pooled_stats(self, stats: FloatVector) -> FeatureStats:
        """The pooled feature statistics in the decrypted statistics sum, at this run's
        histogram resolution (a scorecard's sum holds them as its good and bad halves)."""
        if self.federation.model == "scorecard":
            n_bins = BinningConfig().histogram_bins
            return ScorecardStats(self.data.schema, stats, n_bins=n_bins).pooled
        return FeatureStats.from_vector(stats, self.data.schema, n_bins=self.stats_bins)

    def release_record(
        self,
        pooled: FeatureStats,
        *,
        rounds: int,
        history: list[dict[str, Any]],
        parties: list[str],
    ) -> ReleaseRecord:
        """What every released artifact records besides its model: id, metrics, lineage.

        Raises
        ------
        PartyRefusedError
            If this party is not set up to release (no release_dir or signing_key).
        """
        if self.config.release_dir is None or self.config.signing_key is None:
            raise PartyRefusedError(
                f"party {self.config.name} is not set up to release: release_dir and "
                "signing_key must be set in party.toml"
            )
        fingerprint = hashlib.sha256(
            self.data.schema.fingerprint().encode() + np.round(pooled.to_vector(), 3).tobytes()
        ).hexdigest()
        model_id = f"{self.federation.stage}-{self.federation.model}-{uuid.uuid4().hex[:12]}"
        plan = self.federation.privacy_plan()
        return ReleaseRecord(
            model_id=model_id,
            metrics=[
                RoundMetrics(
                    round=int(h["round"]),
                    auc=float(h["auc"]),
                    ks=float(h["ks"]),
                    n_parties=len(h["eval_parties"]),
                )
                for h in history
            ],
            he_params=None if self.federation.plaintext else self.config.he_params.model_dump(),
            lineage=Lineage(
                run_id=self.federation.run_id or model_id,
                parties=parties,
                rounds=rounds,
                dataset_fingerprint=fingerprint,
                created_at=datetime.now(UTC).isoformat(),
                secure_aggregation=self.secure_aggregation(len(parties)),
            ),
            privacy=(
                None
                if plan is None
                else PrivacyRecord.from_plan(plan, history=history, parties=parties)
            ),
        )

    def secure_aggregation(self, n_parties: int) -> str:
        """The run's protection of individual vectors, as the signed artifact states it."""
        if self.federation.plaintext:
            return "none (plaintext comparison mode)"
        if not self.federation.masking or n_parties < MIN_MASKED_PARTIES:
            return "ckks (shared key; no pairwise masks)"
        threshold = threshold_for(self.federation.mask_threshold, n_parties)
        masks = "pairwise+self-masks" if self.federation.mask_self else "pairwise-masks"
        return f"ckks+{masks} threshold={threshold}/{n_parties}"

    def write_release(self, artifact: ModelArtifact) -> Path:
        """Sign ``artifact`` with this party's key and write it to its release folder."""
        assert self.config.release_dir is not None and self.config.signing_key is not None
        path = write_artifact(
            artifact, self.config.release_dir, signing_key=load_signing_key(self.config.signing_key)
        )
        log.info("released model %s to %s", artifact.model_id, path)
        return path

    # ----------------------------------------------------------------- helpers

    @property
    def _target(self) -> str:
        target = self.data.schema.target_column
        if target is None:
            raise PartyRefusedError(f"party {self.config.name}: schema has no target column")
        return target

    def _global_pipeline(self, stats: FloatVector, global_sum: FloatVector) -> RiskPipeline:
        """The global model as every party holds it: shared preprocessing, averaged weights."""
        prep, pooled = self._preprocessor(stats)
        return RiskPipeline.from_fitted(
            prep,
            self._spec(prep),
            self._global_model(global_sum).weights,
            logit_offset=_logit_offset(pooled),
        )

    @property
    def _server_optimizer(self) -> ServerOptimizer:
        fed = self.federation
        return ServerOptimizer(fed.server_optimizer, learning_rate=fed.server_learning_rate)

    def _global_model(self, global_sum: FloatVector) -> GlobalModel:
        """The global model (and an adaptive optimiser's state) from the decrypted sum alone:
        every party derives the same one (see :mod:`fedrisk.ml.server_optimizers`)."""
        return self._server_optimizer.step(_global_weights(global_sum))

    def _preprocessor(self, stats: FloatVector) -> tuple[FeatureEncoder, FeatureStats]:
        """The shared preprocessing every party fits from the statistics sum, and the pooled
        feature statistics (a scorecard's WOE bins come from its good and bad halves)."""
        if self.federation.model == "scorecard":
            config = BinningConfig()
            scorecard = ScorecardStats(self.data.schema, stats, n_bins=config.histogram_bins)
            encoder = WoeEncoder(self.data.schema, config).fit_stats(scorecard)
            return encoder, scorecard.pooled
        pooled = self.pooled_stats(stats)
        return Preprocessor(self.data.schema).fit_stats(pooled), pooled

    def _spec(self, prep: FeatureEncoder) -> ModelSpec:
        return ModelSpec(
            kind=network_kind(self.federation.model),
            n_features=prep.n_features_out,
            hidden=self.federation.hidden,
        )

    def _train_overrides(self) -> dict[str, Any]:
        fed = self.federation
        overrides: dict[str, Any] = {"local_epochs": fed.local_epochs, "batch_size": fed.batch_size}
        if fed.learning_rate > 0:
            overrides["learning_rate"] = fed.learning_rate
        if fed.optimizer != "default":
            overrides["optimizer"] = fed.optimizer
        if fed.proximal_mu > 0:
            overrides["proximal_mu"] = fed.proximal_mu
        return overrides

    def _seed(self, rnd: int) -> int:
        digest = hashlib.sha256(f"{self.federation.seed}:{rnd}:{self.config.name}".encode())
        return int.from_bytes(digest.digest()[:8], "little") % (2**63)


def histogram_metrics(hist: npt.NDArray[np.float64]) -> tuple[float, float]:
    """AUC and KS of pooled ``(2, n_bins)`` score histograms."""
    return auc_from_histograms(hist), ks_from_histograms(hist)


def release_reference(
    hist: npt.NDArray[np.float64], pooled: FeatureStats | None = None
) -> ScoreReference | None:
    """Reference PD bands of the pooled histograms, with the per-feature CSI bins of the pooled
    feature statistics (the decrypted sum of the parties' encrypted, masked statistics vectors:
    no extra pass); None (logged) when a class is missing, since bands without both classes
    cannot say what a bad rate should be."""
    try:
        features = [] if pooled is None else feature_reference(pooled)
        return reference_from_histograms(hist, features=features)
    except SchemaError as error:
        log.warning("release carries no reference bands: %s", error)
        return None


def _global_weights(global_sum: FloatVector) -> np.ndarray:
    """``sum(n_i * w_i) ++ [sum(n_i)]`` divided out: the weighted-average model."""
    weights, _total = unweight_sum(global_sum)
    return _snap(weights)


def _snap(weights: np.ndarray) -> np.ndarray:
    """Put decrypted weights on a 2^-32 grid, far coarser than the CKKS noise left in them.

    After dividing the decrypted sum by the total count the noise is ~1e-12. It matters only
    where a weight is exactly 0 and its gradient too (a one-hot column never seen in training):
    with weight decay, Adam normalises the noise-sized gradient into a full learning-rate step.
    Snapping restores the exact 0, so encrypted and plaintext runs train the same model.
    """
    grid = 2.0**32
    return np.round(np.asarray(weights, dtype=np.float64) * grid) / grid


def _logit_offset(stats: FeatureStats) -> float:
    """The offset that undoes balanced class weighting with the pooled bad rate."""
    return logit_offset_for(_positive_rate(stats))


def _positive_rate(stats: FeatureStats) -> float:
    rate = stats.positive_rate
    if rate is None or not 0.0 < rate < 1.0:
        raise PartyRefusedError(
            f"the parties' pooled bad rate must be strictly between 0 and 1; got {rate}"
        )
    return rate
