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
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict

from fedrisk.data.vertical import SPLIT_CODES
from fedrisk.errors import FedRiskError, IdentityError
from fedrisk.federation import published_keys
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
    host_slopes4,
    pad_references,
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
    own_data: Path
    """The party's own table (CSV or Parquet, its own row order)."""
    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    secret_key: Path
    signing_key: Path
    release_dir: Path
    peers_dir: Path
    id_column: str | None = None
    """The identifier column private set intersection aligns on."""
    alignment: Path | None = None
    """An alignment result (JSON, :mod:`fedrisk.federation.alignment`) for runs that do not
    align by private set intersection first (in-process simulations)."""
    label: str | None = None
    """The guest's label column in ``own_data``."""
    split: Path | None = None
    """The guest's train / validation / test code per row (``.npy``); it never leaves the
    guest."""
    order_seed: int | None = None
    """The guest's secret seed of its batch order and padding; fresh from the OS when unset.
    Hosts must never know it."""
    roster: Path | None = None
    """Every party's Ed25519 verify key (:func:`fedrisk.federation.published_keys.load_roster_keys`:
    the provisioned manifest, or the simulation's trusted-key folder): the keys the coordinator
    relays are checked against it. ``signing_key`` signs the keys this party publishes."""


def load_config(path: Path) -> VerticalPartyConfig:
    """Read a party's ``vertical.json``."""
    return VerticalPartyConfig.model_validate_json(path.read_text(encoding="utf-8"))


def config_for(
    node_config: Mapping[str, object], federation: FederationConfig
) -> VerticalPartyConfig:
    """The party this node plays: a simulated one (its partition id names its folder) or the
    deployed party its executor serves (``party.toml``'s ``vertical``).

    Raises
    ------
    VerticalStepError
        The party holds no vertical view.
    """
    if federation.sim_workspace and "partition-id" in node_config:
        pid = int(str(node_config["partition-id"]))
        folder = Path(federation.sim_workspace) / "parties" / f"party_{pid}"
        return load_config(folder / CONFIG_FILE)
    from clients.party import resolve_party_config

    served = resolve_party_config(node_config, federation)
    if served.vertical is None:
        raise VerticalStepError(
            f"party {served.name} must be started with a vertical view (`fedrisk party start "
            "--vertical view.json`) to take part in a vertical run; got none"
        )
    return load_config(served.vertical)


class VerticalView(BaseModel):
    """A deployed party's own description of its vertical data (``party start --vertical``).

    Only column names and the party's role: the rows stay in its own table, and the guest's
    split of its customers is drawn here, at the guest, from ``split_seed``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["guest", "host"]
    id_column: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    label: str | None = None
    """The guest's label column (0/1); a host must not name one."""
    split_seed: int = 0
    test_fraction: float = 0.2
    valid_fraction: float = 0.1


def prepare_vertical_party(
    view_file: Path,
    *,
    name: str,
    data: Path,
    state_dir: Path,
    signing_key: Path,
    release_dir: Path,
    pinned_role: str | None,
    roster: Path | None = None,
) -> Path:
    """Check a deployed party's view against its own table and its pin, and write its
    ``vertical.json``.

    ``pinned_role`` is the role the party's installed pin gives it (None: the pin admits no
    vertical run with this party): the view must say the same.

    The party's own CKKS key is generated here on first use (mode 0600) and never leaves; the
    guest's train / validation / test split is drawn once and kept beside it.

    Raises
    ------
    VerticalStepError
        The view does not parse, names columns the table lacks, or a host names a label.
    """
    from fedrisk.data.vertical import split_codes

    try:
        view = VerticalView.model_validate_json(view_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise VerticalStepError(f"vertical view {view_file} must be valid JSON; got {e}") from e
    frame = read_table(data)
    wanted = [view.id_column, *view.numeric, *view.categorical, view.label]
    missing = sorted({c for c in wanted if c is not None} - set(frame.columns))
    problems = [f"columns {missing} missing from {data}"] if missing else []
    if (view.role == "guest") != (view.label is not None):
        problems.append(f"label must be set exactly for the guest; got {view.label!r}")
    if pinned_role != view.role:
        problems.append(
            f"role must be the one the installed pin gives this party ({pinned_role}); got "
            f"{view.role!r} (the lead signs a vertical pin: `fedrisk party pin sign "
            "--vertical-guest ...`)"
        )
    if problems:
        raise VerticalStepError(f"vertical view of {name}: " + "; ".join(problems))
    folder = state_dir / "vertical"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = folder / "ckks.secret"
    if not secret.exists():
        write_atomic(secret, PartyKey.generate().secret_bytes(), private=True)
    guest_only: dict[str, Any] = {}
    if view.label is not None:
        labels = frame[view.label].to_numpy()
        if not np.isin(labels, (0, 1)).all():
            raise VerticalStepError(f"label {view.label!r} of {name} must be 0/1 in {data}")
        split = folder / "split.npy"
        codes = split_codes(
            labels.astype(np.int64),
            rng=np.random.default_rng(view.split_seed),
            test_fraction=view.test_fraction,
            valid_fraction=view.valid_fraction,
        )
        np.save(split, codes)
        guest_only = {"label": view.label, "split": split}
    config = VerticalPartyConfig(
        name=name,
        role=view.role,
        own_data=data,
        numeric=view.numeric,
        categorical=view.categorical,
        secret_key=secret,
        signing_key=signing_key,
        release_dir=release_dir,
        peers_dir=folder / "peers",
        id_column=view.id_column,
        roster=roster,
        **guest_only,
    )
    target = folder / CONFIG_FILE
    write_atomic(target, config.model_dump_json(), private=True)
    return target


@dataclass(frozen=True)
class Runtime:
    """What a party loads once per run: its own table, alignment and key; the guest also its
    labels, split, preprocessing and matrix (a host fits its own once the guest named its
    training rows: :func:`host_model`)."""

    config: VerticalPartyConfig
    features: pd.DataFrame
    key: PartyKey
    alignment: GuestAlignment | HostAlignment
    labels: npt.NDArray[np.int64] | None = None
    split: npt.NDArray[np.int8] | None = None
    prep: PartyPreprocessor | None = None
    matrix: npt.NDArray[np.float64] | None = None
    run_id: str = ""
    """The run the keys this party publishes and accepts are bound to."""

    @property
    def is_guest(self) -> bool:
        return self.config.role == "guest"

    def peer(self, name: str) -> PartyKey:
        """Another party's public context (installed by the setup step)."""
        return _peer_key(self.config.peers_dir / f"{name}.ctx")

    def rows(self, split: str) -> npt.NDArray[np.int64]:
        """The guest's rows of one split."""
        assert self.split is not None
        return np.flatnonzero(self.split == SPLIT_CODES[split]).astype(np.int64)

    def refs(self, host: str) -> npt.NDArray[np.int64]:
        """Per guest row, ``host``'s reference of that customer or -1 (guest only)."""
        assert isinstance(self.alignment, GuestAlignment)
        return self.alignment.references(host)


@functools.lru_cache(maxsize=16)
def _peer_key(path: Path) -> PartyKey:
    return PartyKey.from_bytes(path.read_bytes())


def read_table(path: Path) -> pd.DataFrame:
    """A party's own table, CSV or Parquet."""
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def parse_alignment(text: str) -> GuestAlignment | HostAlignment:
    """An alignment result from its JSON, guest's or host's."""
    return (
        GuestAlignment.from_json(text)
        if "n_rows" in json.loads(text)
        else HostAlignment.from_json(text)
    )


@functools.lru_cache(maxsize=4)
def runtime(config: VerticalPartyConfig, run_id: str, alignment: str | None = None) -> Runtime:
    """Load the party's table, alignment and key (cached per run: the process answers many
    steps).

    ``alignment`` is the party's private-set-intersection result as JSON
    (``clients.alignment.load_alignment``); without it the party reads ``config.alignment``.

    Raises
    ------
    VerticalStepError
        If the party has no alignment, or it does not fit the party's role or table.
    """
    if alignment is None:
        if config.alignment is None:
            raise VerticalStepError(
                f"party {config.name} must align by PSI or name an alignment file; got neither"
            )
        alignment = config.alignment.read_text(encoding="utf-8")
    result = parse_alignment(alignment)
    frame = read_table(config.own_data)
    features = frame[[*config.numeric, *config.categorical]].reset_index(drop=True)
    key = PartyKey.from_bytes(config.secret_key.read_bytes())
    if isinstance(result, HostAlignment):
        if config.role != "host" or (len(result.rows) and int(result.rows.max()) >= len(frame)):
            raise VerticalStepError(
                f"party {config.name} ({config.role}) must hold a host's alignment over its "
                f"{len(frame)} rows; got one for {result.host}"
            )
        return Runtime(config=config, features=features, key=key, alignment=result, run_id=run_id)
    if config.role != "guest" or config.label is None or config.split is None:
        raise VerticalStepError(
            f"party {config.name} got a guest's alignment; it must be the guest with a label "
            "and a split"
        )
    split = np.load(config.split).astype(np.int8)
    if result.n_rows != len(frame) or len(split) != len(frame):
        raise VerticalStepError(
            f"alignment and split of {config.name} must cover its {len(frame)} rows; got "
            f"{result.n_rows} and {len(split)}"
        )
    known = np.ones(len(frame), dtype=bool)
    train = np.flatnonzero(split == SPLIT_CODES["train"]).astype(np.int64)
    prep = PartyPreprocessor(config.numeric, config.categorical).fit(features, known, rows=train)
    return Runtime(
        config=config,
        features=features,
        key=key,
        alignment=result,
        labels=frame[config.label].to_numpy(dtype=np.int64),
        split=split,
        prep=prep,
        matrix=with_intercept(prep.transform(features, known)),
        run_id=run_id,
    )


@dataclass(frozen=True)
class HostModel:
    """A host's preprocessing and matrix over its own rows."""

    prep: PartyPreprocessor
    matrix: npt.NDArray[np.float64]


_HOST_MODELS: dict[tuple[str, str, bytes], HostModel] = {}


def host_model(rt: Runtime, state: State) -> HostModel:
    """The host's preprocessing, fitted on the training customers the guest named at install
    (kept in its state), and its matrix over its own rows."""
    if "train_refs" not in state:
        raise VerticalStepError(f"host {rt.config.name} has not been installed yet")
    cache_key = (str(rt.config.own_data), rt.config.name, json.dumps(state["train_refs"]).encode())
    if cache_key not in _HOST_MODELS:
        assert isinstance(rt.alignment, HostAlignment)
        train = rt.alignment.row_of(state["train_refs"])
        known = np.ones(len(rt.features), dtype=bool)
        prep = PartyPreprocessor(rt.config.numeric, rt.config.categorical).fit(
            rt.features, known, rows=train
        )
        # The ``_known`` column exists when the host lacks some of the guest's customers (the
        # guest says so; it is 1 on every row the host scores).
        prep.known_indicator_ = bool(state["partial"])
        _HOST_MODELS.clear()
        _HOST_MODELS[cache_key] = HostModel(prep, prep.transform(rt.features, known))
    return _HOST_MODELS[cache_key]


def _width(rt: Runtime, state: State) -> int:
    matrix = rt.matrix if rt.matrix is not None else host_model(rt, state).matrix
    return int(matrix.shape[1])


def _adam(state: State, n: int) -> AdamState:
    return AdamState.from_dict(state["adam"]) if "adam" in state else AdamState.zeros(n)


def handle(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Answer one step (the state is updated in place)."""
    step = packet.step
    if step == vp.STEP_SETUP:
        return _setup(packet, rt, state)
    if rt.is_guest:
        handlers = {
            vp.STEP_PLAN: _guest_plan,
            vp.STEP_RESIDUAL: _guest_residual,
            vp.STEP_UPDATE: _guest_update,
            vp.STEP_VALID_CONVERT: _guest_valid_convert,
            vp.STEP_VALIDATE: _guest_validate,
            vp.STEP_RELEASE: _release,
        }
    else:
        handlers = {
            vp.STEP_INSTALL: _host_install,
            vp.STEP_SCORES: _host_scores,
            vp.STEP_VALID_SCORES: _host_scores,
            vp.STEP_CONVERT: _host_convert,
            vp.STEP_GRADIENT: _host_gradient,
            vp.STEP_RELEASE: _release,
        }
    if step not in handlers:
        raise VerticalStepError(f"{rt.config.role} {rt.config.name} does not answer step {step!r}")
    return handlers[step](packet, rt, state, params)


def _setup(packet: Packet, rt: Runtime, state: State) -> Packet:
    """Install the peers' public contexts (and, at a host, the other hosts' X25519 keys) the
    coordinator relays, each checked first against its owner's signature and roster key; answer
    with our own, signed. The guest, once it holds the hosts' contexts, answers each host's
    training references (under that host's key)."""
    relayed = _checked_keys(packet, rt)
    rt.config.peers_dir.mkdir(parents=True, exist_ok=True)
    installed = []
    for (prefix, name), key in relayed.items():
        if prefix == vp.PUBLIC_CONTEXT:
            write_atomic(rt.config.peers_dir / f"{name}.ctx", key)
            _peer_key.cache_clear()
            installed.append(name)
        else:
            write_atomic(rt.config.peers_dir / f"{name}.x25519", key)
    if rt.is_guest:
        if "order_seed" not in state:
            seed = rt.config.order_seed
            state["order_seed"] = secrets.randbits(63) if seed is None else seed
        if installed:
            return _guest_install(rt, installed)
        assert rt.matrix is not None
        meta: vp.Meta = {
            "party": rt.config.name,
            "role": "guest",
            "features": rt.matrix.shape[1],
            "train_rows": len(rt.rows("train")),
            "valid_rows": len(rt.rows("valid")),
        }
        return Packet(
            vp.STEP_SETUP,
            meta=meta,
            enc={vp.PUBLIC_CONTEXT: _signed(rt, vp.PUBLIC_CONTEXT, rt.key.public_bytes())},
        )
    enc = {vp.PUBLIC_CONTEXT: _signed(rt, vp.PUBLIC_CONTEXT, rt.key.public_bytes())}
    own = rt.config.peers_dir / _OWN_X25519
    if not own.exists():
        private, public = generate_x25519()
        write_atomic(own, private)
        own.chmod(0o600)
        write_atomic(own.with_suffix(".pub"), public)
    enc[vp.X25519] = _signed(rt, vp.X25519, own.with_suffix(".pub").read_bytes())
    return Packet(vp.STEP_SETUP, meta={"party": rt.config.name, "role": "host"}, enc=enc)


_PURPOSES = {
    vp.PUBLIC_CONTEXT: published_keys.CKKS_PUBLIC_CONTEXT,
    vp.X25519: published_keys.X25519_MASK,
}
"""What each published key of the setup step is for (part of what its owner signs)."""


def _signed(rt: Runtime, kind: str, key: bytes) -> list[bytes]:
    """A key we publish, as it travels: the key, then our signature binding it to this run,
    the setup step, our name and its purpose."""
    claim = published_keys.KeyClaim(rt.run_id, vp.STEP_SETUP, rt.config.name, _PURPOSES[kind])
    return [key, claim.sign(load_signing_key(rt.config.signing_key), key)]


def _checked_keys(packet: Packet, rt: Runtime) -> dict[tuple[str, str], bytes]:
    """The peers' keys of a setup packet, each verified against its owner's roster key before
    anything is installed (a substituted or replayed key stops the step).

    Raises
    ------
    VerticalStepError
        A key is unsigned or its signature is not its owner's for this run, or a context is a
        secret one.
    """
    wanted = [
        (prefix, name, chunks)
        for key, chunks in packet.enc.items()
        for prefix, _, name in [key.partition("/")]
        if prefix in _PURPOSES and name and name != rt.config.name
    ]
    if not wanted:
        return {}
    try:
        roster = published_keys.roster_keys_of(rt.config.name, rt.config.roster)
        for prefix, name, chunks in wanted:
            claim = published_keys.KeyClaim(rt.run_id, vp.STEP_SETUP, name, _PURPOSES[prefix])
            signature = chunks[1] if len(chunks) > 1 else None
            claim.check(roster, signature, chunks[0], receiver=rt.config.name)
    except IdentityError as e:
        raise VerticalStepError(str(e)) from e
    checked: dict[tuple[str, str], bytes] = {}
    for prefix, name, chunks in wanted:
        if prefix == vp.PUBLIC_CONTEXT and PartyKey.from_bytes(chunks[0]).secret:
            raise VerticalStepError(f"peer context of {name} must be public; got a secret one")
        checked[(prefix, name)] = chunks[0]
    return checked


def _guest_install(rt: Runtime, hosts: list[str]) -> Packet:
    """Each host's references of its training customers (to fit its preprocessing on), in
    reference order, and whether it lacks any of our customers."""
    enc: dict[str, list[bytes]] = {}
    meta: vp.Meta = {}
    for host in hosts:
        refs = rt.refs(host)
        train = np.sort(refs[rt.rows("train")])
        train = train[train >= 0]
        if len(train) == 0:
            raise VerticalStepError(f"host {host} must share a training customer; it shares none")
        enc[for_party(vp.ROWS, host)] = rt.peer(host).encrypt(train.astype(np.float64))
        meta[for_party("rows", host)] = len(train)
        meta[for_party("partial", host)] = bool(np.any(refs < 0))
    return Packet(vp.STEP_SETUP, meta=meta, enc=enc)


_OWN_X25519 = "own.x25519"


def _host_masks(rt: Runtime) -> PairwiseMasks:
    folder = rt.config.peers_dir
    peers = {
        p.stem: p.read_bytes() for p in sorted(folder.glob("*.x25519")) if p.name != _OWN_X25519
    }
    return pairwise_masks(rt.config.name, (folder / _OWN_X25519).read_bytes(), peers)


# -- host ------------------------------------------------------------------------------------


def _decrypt_refs(rt: Runtime, chunks: list[bytes], n: int) -> npt.NDArray[np.int64]:
    """References the guest sent under our key, checked to name our shared rows."""
    values = rt.key.decrypt(chunks, n=n)
    refs = np.round(values).astype(np.int64)
    if np.any(np.abs(values - refs) > 0.25):
        raise VerticalStepError("row references must decrypt to whole numbers; got others")
    return refs


def _host_install(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Fit our preprocessing on the training customers the guest names; answer our width."""
    n = int(packet.meta["rows"])
    refs = _decrypt_refs(rt, packet.enc[vp.ROWS], n)
    assert isinstance(rt.alignment, HostAlignment)
    rt.alignment.row_of(refs)  # refuses references to rows we do not share
    state["train_refs"] = refs.tolist()
    state["partial"] = bool(packet.meta["partial"])
    return Packet(vp.STEP_INSTALL, meta={"features": _width(rt, state)})


def _apply_pending(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> None:
    """Finish the previous batch: unmask the guest's flooded sums into our gradient, step."""
    sums = packet.masked.get(vp.SUMS)
    if sums is None:
        return
    pending = state.pop("pending", None)
    if pending is None:
        raise VerticalStepError("flooded sums arrived but no products were awaiting them")
    xt_d4 = sums - np.asarray(pending["mask_sums"])
    adam = _adam(state, _width(rt, state))
    grad = penalized_gradient(
        xt_d4, adam.weights, n=int(pending["n"]), l2=params.l2, intercept=rt.is_guest
    )
    adam.step(grad, learning_rate=params.learning_rate)
    state["adam"] = adam.to_dict()


def _host_scores(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Steps 1 and V1: our partial scores on the rows the guest's padded references name,
    under our own key."""
    _apply_pending(packet, rt, state, params)
    if packet.meta.get("mark_best"):
        state["best"] = state.get("last_valid", state.get("adam", {}).get("w"))
    model = host_model(rt, state)
    adam = _adam(state, model.matrix.shape[1])
    refs = _decrypt_refs(rt, packet.enc[vp.ROWS], int(packet.meta["slots"]))
    assert isinstance(rt.alignment, HostAlignment)
    rows = rt.alignment.row_of(refs)
    if packet.step == vp.STEP_VALID_SCORES:
        state["last_valid"] = adam.weights.tolist()
    else:
        state["rows"] = rows.tolist()
    u = model.matrix[rows] @ adam.weights
    return Packet(packet.step, enc={vp.U_OWN: rt.key.encrypt(u)})


def _host_convert(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Steps 3 and V3: flooded sums of the guest's masked products (training only), and each
    masked score the guest made under our key, re-encrypted under the guest's key with our share
    of the hosts' zero-sum mask."""
    n = int(packet.meta["slots"])
    guest = rt.peer(str(packet.meta["guest"]))
    masks = _host_masks(rt)
    enc: dict[str, list[bytes]] = {}
    for key, chunks in packet.enc.items():
        prefix, _, dest = key.partition("/")
        if prefix != vp.CONVERT:
            continue
        # The zero-sum mask cancels only in the coordinator's sum over hosts for one
        # destination: a single host's ciphertext stays masked even for a colluding guest.
        label = f"{packet.step}/{packet.meta['epoch']}/{packet.meta.get('batch', 'valid')}/{dest}"
        offset = masks.mask(n, label=label)
        enc[for_party(vp.U_FOR_GUEST, dest)] = rt.key.reencrypt(
            chunks, n=n, to=guest, offset=offset
        )
    masked: dict[str, npt.NDArray[np.float64]] = {}
    if vp.PRODUCTS in packet.enc:
        masked[vp.SUMS] = rt.key.flooded_sums(
            packet.enc[vp.PRODUCTS], n=n, n_features=int(packet.meta["guest_features"])
        )
    return Packet(packet.step, enc=enc, masked=masked)


def _host_gradient(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Step 4: masked products of our batch rows with our residual ``[[4d_k]]`` (zero on the
    padding), under the guest's key."""
    rows = np.asarray(state["rows"], dtype=np.int64)
    guest = rt.peer(str(packet.meta["guest"]))
    x = host_model(rt, state).matrix[rows]
    products, mask_sums = guest.masked_products(packet.enc[vp.D4_ENC], x)
    state["pending"] = {"mask_sums": mask_sums.tolist(), "n": int(packet.meta["n"])}
    return Packet(packet.step, enc={vp.PRODUCTS: products})


# -- guest -----------------------------------------------------------------------------------


def _order_seed(state: State) -> int:
    return int(state["order_seed"])


def _batches(
    rt: Runtime, params: VerticalParams, state: State, epoch: int
) -> list[npt.NDArray[np.int64]]:
    return batch_schedule(
        rt.rows("train"), batch_size=params.batch_size, seed=_order_seed(state), epoch=epoch
    )


def _valid_order(rt: Runtime, state: State, epoch: int) -> npt.NDArray[np.int64]:
    return np.random.default_rng([_order_seed(state), epoch, 1]).permutation(rt.rows("valid"))


def _batch(
    rt: Runtime, params: VerticalParams, state: State, meta: vp.Meta
) -> npt.NDArray[np.int64]:
    batches = _batches(rt, params, state, int(meta["epoch"]))
    index = int(meta["batch"])
    if not 0 <= index < len(batches):
        raise VerticalStepError(f"batch must be in [0, {len(batches)}); got {index}")
    return batches[index]


def _guest_plan(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Epoch start: for each host, the padded references of every batch and of the validation
    rows, in our secret order, under that host's key (:func:`pad_references`)."""
    epoch = int(packet.meta["epoch"])
    batches = _batches(rt, params, state, epoch)
    hosts = json.loads(str(packet.meta["hosts"]))
    enc: dict[str, list[bytes]] = {}
    for index, host in enumerate(hosts):
        refs = rt.refs(host)
        rng = np.random.default_rng([_order_seed(state), epoch, 2, index])
        padded = pad_references(refs[np.concatenate(batches)], rng=rng)
        start = 0
        for b, batch in enumerate(batches):
            chunk = padded[start : start + len(batch)].astype(np.float64)
            enc[for_party(vp.ROWS, f"{host}/{b}")] = rt.peer(host).encrypt(chunk)
            start += len(batch)
        valid_refs = refs[_valid_order(rt, state, epoch)]
        if not np.any(valid_refs >= 0):
            # No shared validation customer: pad with one training customer (zeroed like
            # all padding, since the zeroing follows the true references).
            valid_refs[0] = refs[refs >= 0][0]
        valid_padded = pad_references(valid_refs, rng=rng)
        enc[for_party(vp.ROWS, f"{host}/{vp.VALID}")] = rt.peer(host).encrypt(
            valid_padded.astype(np.float64)
        )
    return Packet(packet.step, enc=enc)


def _guest_residual(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Step 2: for each host, masked products of its encrypted scores with our slope-weighted
    rows (our gradient's cross terms), and its scores times our slopes, zeroed on the padding
    and masked, for it to re-encrypt under our key once per host they are destined to; our part
    of each host's residual under our key."""
    rows = _batch(rt, params, state, packet.meta)
    adam = _adam(state, _width(rt, state))
    assert rt.matrix is not None and rt.labels is not None
    x = rt.matrix[rows]
    u_guest = x @ adam.weights
    c = residual4(u_guest, rt.labels[rows])
    slopes = host_slopes4(u_guest)
    hosts = json.loads(str(packet.meta["hosts"]))
    known = {h: (rt.refs(h)[rows] >= 0).astype(np.float64) for h in hosts}
    enc: dict[str, list[bytes]] = {}
    masks: dict[str, list[float]] = {}
    offsets = {dest: np.zeros(len(rows)) for dest in hosts}
    for host in hosts:
        chunks = packet.enc[for_party(vp.U_OWN, host)]
        peer = rt.peer(host)
        weights = slopes * known[host]
        products, mask_sums = peer.masked_products(chunks, x * weights[:, None])
        enc[for_party(vp.PRODUCTS, host)] = products
        masks[host] = mask_sums.tolist()
        for dest in hosts:
            masked, mask = peer.masked_scaled(chunks, weights * known[dest])
            enc[for_party(vp.CONVERT, f"{host}/{dest}")] = masked
            offsets[dest] -= mask
    for dest in hosts:
        enc[for_party(vp.C_ENC, dest)] = rt.key.encrypt(c * known[dest] + offsets[dest])
    state["pending"] = {"own": (x.T @ c).tolist(), "masks": masks, "n": len(rows)}
    return Packet(packet.step, enc=enc)


def _guest_update(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Step 5: unmask the hosts' flooded sums into our gradient and step; decrypt each host's
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
    adam = _adam(state, _width(rt, state))
    grad = penalized_gradient(
        xt_d4, adam.weights, n=int(pending["n"]), l2=params.l2, intercept=True
    )
    adam.step(grad, learning_rate=params.learning_rate)
    state["adam"] = adam.to_dict()
    return Packet(packet.step, masked=out)


def _guest_valid_convert(
    packet: Packet, rt: Runtime, state: State, params: VerticalParams
) -> Packet:
    """Step V2: each host's validation scores zeroed on the padding and masked, for it to
    re-encrypt under our key; we keep the masks' sum."""
    rows = _valid_order(rt, state, int(packet.meta["epoch"]))
    total = np.zeros(len(rows))
    enc: dict[str, list[bytes]] = {}
    for host in json.loads(str(packet.meta["hosts"])):
        known = (rt.refs(host)[rows] >= 0).astype(np.float64)
        masked, mask = rt.peer(host).masked_scaled(packet.enc[for_party(vp.U_OWN, host)], known)
        enc[for_party(vp.CONVERT, f"{host}/{vp.VALID}")] = masked
        total += mask
    state["valid_masks"] = total.tolist()
    return Packet(packet.step, enc=enc)


def _guest_validate(packet: Packet, rt: Runtime, state: State, params: VerticalParams) -> Packet:
    """Step V4: decrypt the hosts' summed validation scores, score our validation rows, keep
    the best epoch; only the AUC and the decision leave."""
    epoch = int(packet.meta["epoch"])
    rows = _valid_order(rt, state, epoch - 1)
    masks = np.asarray(state.pop("valid_masks"))
    host_sum = rt.key.decrypt(packet.enc[vp.U_FOR_GUEST], n=len(rows)) - masks
    adam = _adam(state, _width(rt, state))
    assert rt.matrix is not None and rt.labels is not None
    value = float(auc(rt.labels[rows], rt.matrix[rows] @ adam.weights + host_sum))
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
    weights = state.get("best") or _adam(state, _width(rt, state)).weights.tolist()
    prep = rt.prep if rt.prep is not None else host_model(rt, state).prep
    part = VerticalPart(
        model_id=str(packet.meta["model_id"]),
        party=rt.config.name,
        role=rt.config.role,
        parties=json.loads(str(packet.meta["parties"])),
        columns=prep.columns if not rt.is_guest else ["_intercept", *prep.columns],
        weights=[float(w) for w in weights],
        preprocessing=prep.to_dict(),
        metrics={"valid_auc": float(state.get("best_auc", float("nan")))} if rt.is_guest else {},
        params=params.model_dump(),
    )
    path = write_part(
        part, rt.config.release_dir, signing_key=load_signing_key(rt.config.signing_key)
    )
    log.info("vertical part written to %s", path)
    return Packet(packet.step, meta={"path": str(path), "party": rt.config.name})
