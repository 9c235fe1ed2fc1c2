"""A party's side of vertical logistic regression: the guest (labels) and the hosts (features).

Each step takes a :class:`~fedrisk.federation.vertical.Packet` from the coordinator and the
party's own run state, and answers a packet. What leaves the party is only ciphertexts (under its
own key or another party's) and masked, noise-flooded sums; docs/vertical.md lists each step and
what it reveals. The run state (weights, Adam moments, the mask sums awaiting their answers, the
best epoch's weights) is a JSON dict the ClientApp keeps in Flower's ``Context.state``, beside
the party.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict

from fedrisk.data.vertical import AlignedView, PartyColumns, host_view_from_positions
from fedrisk.errors import FedRiskError
from fedrisk.federation import vertical as vp
from fedrisk.federation.alignment import GuestAlignment, HostAlignment
from fedrisk.federation.run_config import FederationConfig
from fedrisk.federation.vertical import Packet, for_party
from fedrisk.files import write_atomic
from fedrisk.ml.metrics import auc
from fedrisk.ml.vertical import (
    AdamState,
    PartyPreprocessor,
    VerticalParams,
    batch_schedule,
    penalized_gradient,
    residual4,
    with_intercept,
)
from fedrisk.release.identity import load_signing_key
from fedrisk.release.vertical import VerticalPart, write_part
from secure_agg.vertical import PairwiseMasks, PartyKey, generate_x25519, pairwise_masks

log = logging.getLogger(__name__)

CONFIG_FILE = "vertical.json"
STATE_KEY = "vertical-state"
State = dict[str, Any]


class VerticalStepError(FedRiskError, RuntimeError):
    """A vertical step arrived that this party's state cannot answer."""


class VerticalPartyConfig(BaseModel):
    """One party's files for a vertical run (its own folder; nothing here travels)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: Literal["guest", "host"]
    data: Path
    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    secret_key: Path
    signing_key: Path
    release_dir: Path
    peers_dir: Path
    own_data: Path | None = None
    """The party's own table (CSV or Parquet, its own row order, with ``id_column``): what a
    run with private set intersection aligns; ``data`` is then not read."""
    id_column: str | None = None
    label: str | None = None
    """The guest's label column in ``own_data``."""
    split: Path | None = None
    """The guest's train / validation / test code per guest row (``.npy``), which the guest
    hands every party (it says nothing about who a customer is)."""


def load_config(path: Path) -> VerticalPartyConfig:
    """Read a party's ``vertical.json``."""
    return VerticalPartyConfig.model_validate_json(path.read_text(encoding="utf-8"))


def config_for(
    node_config: Mapping[str, object], federation: FederationConfig
) -> VerticalPartyConfig:
    """The simulated party this node plays (its partition id names its folder).

    Raises
    ------
    VerticalStepError
        Outside the simulation engine: deployed vertical parties are not supported yet.
    """
    if not federation.sim_workspace or "partition-id" not in node_config:
        raise VerticalStepError(
            "vertical runs need sim-workspace and a partition id (simulation engine); got node "
            f"config keys {sorted(node_config)}"
        )
    pid = int(str(node_config["partition-id"]))
    return load_config(Path(federation.sim_workspace) / "parties" / f"party_{pid}" / CONFIG_FILE)


@dataclass(frozen=True)
class Runtime:
    """What a party loads once per run: its aligned view, matrix, preprocessing and key."""

    config: VerticalPartyConfig
    view: AlignedView
    prep: PartyPreprocessor
    matrix: npt.NDArray[np.float64]
    key: PartyKey

    @property
    def is_guest(self) -> bool:
        return self.config.role == "guest"

    def peer(self, name: str) -> PartyKey:
        """Another party's public context (installed by the setup step)."""
        return _peer_key(self.config.peers_dir / f"{name}.ctx")


@functools.lru_cache(maxsize=16)
def _peer_key(path: Path) -> PartyKey:
    return PartyKey.from_bytes(path.read_bytes())


def read_table(path: Path) -> pd.DataFrame:
    """A party's own table, CSV or Parquet."""
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def view_from_alignment(
    config: VerticalPartyConfig, alignment: GuestAlignment | HostAlignment
) -> AlignedView:
    """The party's aligned view from its own table and its private-set-intersection result.

    Raises
    ------
    VerticalStepError
        If the party has no own table, id column or split, or the result does not fit them.
    """
    if config.own_data is None or config.id_column is None or config.split is None:
        raise VerticalStepError(
            f"party {config.name} must name own_data, id_column and split to train on aligned "
            "identifiers; got a config without them"
        )
    frame = read_table(config.own_data)
    split = np.load(config.split).astype(np.int8)
    if isinstance(alignment, GuestAlignment):
        if config.role != "guest" or config.label is None:
            raise VerticalStepError(f"party {config.name} got a guest's alignment; it is a host")
        if alignment.n_rows != len(frame) or len(split) != len(frame):
            raise VerticalStepError(
                f"alignment and split of {config.name} must cover its {len(frame)} rows; got "
                f"{alignment.n_rows} and {len(split)}"
            )
        return AlignedView(
            name=config.name,
            role="guest",
            features=frame[[*config.numeric, *config.categorical]].reset_index(drop=True),
            known=np.ones(len(frame), dtype=bool),
            split=split,
            numeric=config.numeric,
            categorical=config.categorical,
            labels=frame[config.label].to_numpy(dtype=np.int64),
        )
    if config.role != "host" or alignment.guest_size != len(split):
        raise VerticalStepError(
            f"party {config.name} ({config.role}) must hold a host's alignment over the guest's "
            f"{len(split)} rows; got one over {alignment.guest_size}"
        )
    ids = frame[config.id_column].tolist()
    positions: list[Hashable | None] = [None] * alignment.guest_size
    for own, guest_row in zip(alignment.rows.tolist(), alignment.guest_rows.tolist(), strict=True):
        positions[guest_row] = ids[own]
    columns = PartyColumns(config.name, frame, config.id_column, config.numeric, config.categorical)
    return host_view_from_positions(columns, positions, split=split)


@functools.lru_cache(maxsize=4)
def runtime(config: VerticalPartyConfig, run_id: str, alignment: str | None = None) -> Runtime:
    """Load the party's data and key (cached per run: the process answers many steps).

    ``alignment`` is the party's private-set-intersection result as JSON
    (``clients.alignment.load_alignment``); without it the party reads already-aligned rows.
    """
    del run_id  # cache key only
    if alignment is not None:
        result = json.loads(alignment)
        parsed = (
            GuestAlignment.from_json(alignment)
            if "n_rows" in result
            else HostAlignment.from_json(alignment)
        )
        view = view_from_alignment(config, parsed)
    else:
        view = AlignedView.from_frame(
            pd.read_csv(config.data),
            name=config.name,
            numeric=config.numeric,
            categorical=config.categorical,
        )
    prep = PartyPreprocessor(config.numeric, config.categorical).fit(
        view.features, view.known, rows=view.rows("train")
    )
    matrix = prep.transform(view.features, view.known)
    if config.role == "guest":
        matrix = with_intercept(matrix)
    key = PartyKey.from_bytes(config.secret_key.read_bytes())
    return Runtime(config=config, view=view, prep=prep, matrix=matrix, key=key)


def _batch(rt: Runtime, params: VerticalParams, meta: vp.Meta) -> npt.NDArray[np.int64]:
    epoch, index = int(meta["epoch"]), int(meta["batch"])
    batches = batch_schedule(
        rt.view.rows("train"), batch_size=params.batch_size, seed=params.seed, epoch=epoch
    )
    if not 0 <= index < len(batches):
        raise VerticalStepError(f"batch must be in [0, {len(batches)}); got {index}")
    return batches[index]


def _adam(state: State, n: int) -> AdamState:
    return AdamState.from_dict(state["adam"]) if "adam" in state else AdamState.zeros(n)


def handle(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Answer one step (the state is updated in place)."""
    step = packet.step
    if step == vp.STEP_SETUP:
        return _setup(packet, rt)
    if rt.is_guest:
        handlers = {
            vp.STEP_RESIDUAL: _guest_residual,
            vp.STEP_UPDATE: _guest_update,
            vp.STEP_VALIDATE: _guest_validate,
            vp.STEP_RELEASE: _release,
        }
    else:
        handlers = {
            vp.STEP_SCORES: _host_scores,
            vp.STEP_VALID_SCORES: _host_scores,
            vp.STEP_GRADIENT: _host_gradient,
            vp.STEP_RELEASE: _release,
        }
    if step not in handlers:
        raise VerticalStepError(f"{rt.config.role} {rt.config.name} does not answer step {step!r}")
    return handlers[step](packet, rt, state, params)


def _setup(packet: Packet, rt: Runtime) -> Packet:
    """Install the peers' public contexts (and, at a host, the other hosts' X25519 keys) the
    coordinator relays; answer with our own."""
    rt.config.peers_dir.mkdir(parents=True, exist_ok=True)
    for key, chunks in packet.enc.items():
        prefix, _, name = key.partition("/")
        if prefix == vp.PUBLIC_CONTEXT and name:
            peer = PartyKey.from_bytes(chunks[0])
            if peer.secret:
                raise VerticalStepError(f"peer context of {name} must be public; got a secret one")
            write_atomic(rt.config.peers_dir / f"{name}.ctx", chunks[0])
        elif prefix == vp.X25519 and name and name != rt.config.name:
            write_atomic(rt.config.peers_dir / f"{name}.x25519", chunks[0])
    meta: vp.Meta = {
        "party": rt.config.name,
        "role": rt.config.role,
        "rows": len(rt.view.split),
        "features": rt.matrix.shape[1],
        "known": int(rt.view.known.sum()),
        "train_rows": len(rt.view.rows("train")),
    }
    enc = {vp.PUBLIC_CONTEXT: [rt.key.public_bytes()]}
    if not rt.is_guest:
        own = rt.config.peers_dir / _OWN_X25519
        if not own.exists():
            private, public = generate_x25519()
            write_atomic(own, private)
            own.chmod(0o600)
            write_atomic(own.with_suffix(".pub"), public)
        enc[vp.X25519] = [own.with_suffix(".pub").read_bytes()]
    return Packet(vp.STEP_SETUP, meta=meta, enc=enc)


_OWN_X25519 = "own.x25519"


def _host_masks(rt: Runtime) -> PairwiseMasks:
    folder = rt.config.peers_dir
    peers = {
        p.stem: p.read_bytes() for p in sorted(folder.glob("*.x25519")) if p.name != _OWN_X25519
    }
    return pairwise_masks(rt.config.name, (folder / _OWN_X25519).read_bytes(), peers)


# -- host ------------------------------------------------------------------------------------


def _apply_pending(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> None:
    """Finish the previous batch: unmask the guest's flooded sums into our gradient, step."""
    sums = packet.masked.get(vp.SUMS)
    if sums is None:
        return
    pending = state.pop("pending", None)
    if pending is None:
        raise VerticalStepError("flooded sums arrived but no products were awaiting them")
    xt_d4 = sums - np.asarray(pending["mask_sums"])
    adam = _adam(state, rt.matrix.shape[1])
    grad = penalized_gradient(
        xt_d4, adam.weights, n=int(pending["n"]), l2=params.l2, intercept=rt.is_guest
    )
    adam.step(grad, learning_rate=params.learning_rate)
    state["adam"] = adam.to_dict()


def _host_scores(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Steps 1 and 5: our partial scores, under the guest's key and under our own."""
    _apply_pending(packet, rt, state, params)
    if packet.meta.get("mark_best"):
        state["best"] = state.get("last_valid", state.get("adam", {}).get("w"))
    adam = _adam(state, rt.matrix.shape[1])
    guest = rt.peer(str(packet.meta["guest"]))
    # Under the guest's key a score travels with this host's share of the hosts' zero-sum mask:
    # only the coordinator's sum over hosts is the plain sum of scores.
    label = f"{packet.step}/{packet.meta['epoch']}/{packet.meta.get('batch', 'valid')}"
    if packet.step == vp.STEP_VALID_SCORES:
        state["last_valid"] = adam.weights.tolist()
        u = rt.matrix[rt.view.rows("valid")] @ adam.weights
        masked = u + _host_masks(rt).mask(len(u), label=label)
        return Packet(packet.step, enc={vp.U_FOR_GUEST: guest.encrypt(masked)})
    rows = _batch(rt, params, packet.meta)
    u = rt.matrix[rows] @ adam.weights
    masked = u + _host_masks(rt).mask(len(u), label=label)
    return Packet(
        packet.step,
        enc={vp.U_FOR_GUEST: guest.encrypt(masked), vp.U_OWN: rt.key.encrypt(u)},
    )


def _host_gradient(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Step 3: decrypt the guest's masked products (flooded sums back), and build ours on the
    encrypted residual."""
    rows = _batch(rt, params, packet.meta)
    guest_features = int(packet.meta["guest_features"])
    sums = rt.key.flooded_sums(packet.enc[vp.PRODUCTS], n=len(rows), n_features=guest_features)
    guest = rt.peer(str(packet.meta["guest"]))
    products, mask_sums = guest.masked_products(packet.enc[vp.D4_ENC], rt.matrix[rows])
    state["pending"] = {"mask_sums": mask_sums.tolist(), "n": len(rows)}
    return Packet(packet.step, enc={vp.PRODUCTS: products}, masked={vp.SUMS: sums})


# -- guest -----------------------------------------------------------------------------------


def _guest_residual(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Step 2: our part of the residual under our key, and masked products with each host's
    encrypted scores (for our gradient's cross terms)."""
    rows = _batch(rt, params, packet.meta)
    adam = _adam(state, rt.matrix.shape[1])
    x = rt.matrix[rows]
    labels = rt.view.labels
    assert labels is not None
    c = residual4(x @ adam.weights, labels[rows])
    enc: dict[str, list[bytes]] = {vp.C_ENC: rt.key.encrypt(c)}
    masks: dict[str, list[float]] = {}
    for key, chunks in packet.enc.items():
        prefix, _, host = key.partition("/")
        if prefix != vp.U_OWN:
            continue
        products, mask_sums = rt.peer(host).masked_products(chunks, x)
        enc[for_party(vp.PRODUCTS, host)] = products
        masks[host] = mask_sums.tolist()
    state["pending"] = {"own": (x.T @ c).tolist(), "masks": masks, "n": len(rows)}
    return Packet(packet.step, enc=enc)


def _guest_update(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Step 4: unmask the hosts' flooded sums into our gradient and step; decrypt each host's
    masked products and send back flooded sums."""
    pending = state.pop("pending", None)
    if pending is None:
        raise VerticalStepError("update arrived before the residual step")
    xt_d4 = np.asarray(pending["own"])
    out: dict[str, npt.NDArray[np.float64]] = {}
    for host, mask_sums in pending["masks"].items():
        sums = packet.masked[for_party(vp.SUMS, host)]
        xt_d4 = xt_d4 + sums - np.asarray(mask_sums)
        out[for_party(vp.SUMS, host)] = rt.key.flooded_sums(
            packet.enc[for_party(vp.PRODUCTS, host)],
            n=int(pending["n"]),
            n_features=int(packet.meta[for_party("features", host)]),
        )
    adam = _adam(state, rt.matrix.shape[1])
    grad = penalized_gradient(
        xt_d4, adam.weights, n=int(pending["n"]), l2=params.l2, intercept=True
    )
    adam.step(grad, learning_rate=params.learning_rate)
    state["adam"] = adam.to_dict()
    return Packet(packet.step, masked=out)


def _guest_validate(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Step 6: decrypt the hosts' summed validation scores, score our validation rows, keep the
    best epoch; only the AUC and the decision leave."""
    rows = rt.view.rows("valid")
    host_sum = rt.key.decrypt(packet.enc[vp.U_FOR_GUEST], n=len(rows))
    adam = _adam(state, rt.matrix.shape[1])
    labels = rt.view.labels
    assert labels is not None
    value = float(auc(labels[rows], rt.matrix[rows] @ adam.weights + host_sum))
    epoch = int(packet.meta["epoch"])
    best = state.get("best_auc", -1.0)
    improved = value > best
    if improved:
        state.update(best_auc=value, best_epoch=epoch, best=adam.weights.tolist())
    stop = epoch - int(state.get("best_epoch", epoch)) >= params.patience
    meta: vp.Meta = {"improved": improved, "stop": stop, "best_epoch": int(state["best_epoch"])}
    return Packet(packet.step, meta=meta, masked={vp.VALID_AUC: np.array([value])})


# -- release ---------------------------------------------------------------------------------


def _release(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Write this party's signed part of the model (the best epoch's weights)."""
    if packet.meta.get("mark_best"):
        state["best"] = state.get("last_valid")
    weights = state.get("best") or _adam(state, rt.matrix.shape[1]).weights.tolist()
    part = VerticalPart(
        model_id=str(packet.meta["model_id"]),
        party=rt.config.name,
        role=rt.config.role,
        parties=json.loads(str(packet.meta["parties"])),
        columns=rt.prep.columns if not rt.is_guest else ["_intercept", *rt.prep.columns],
        weights=[float(w) for w in weights],
        preprocessing=rt.prep.to_dict(),
        metrics={"valid_auc": float(state.get("best_auc", float("nan")))} if rt.is_guest else {},
        params=params.model_dump(),
    )
    path = write_part(
        part, rt.config.release_dir, signing_key=load_signing_key(rt.config.signing_key)
    )
    log.info("vertical part written to %s", path)
    return Packet(packet.step, meta={"path": str(path), "party": rt.config.name})
