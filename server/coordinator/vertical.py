"""The coordinator of vertical logistic regression: relays packets between the guest and the
hosts, and adds ciphertexts under the guest's public key.

The coordinator holds every party's public CKKS context and no secret one: it can add the hosts'
encrypted partial scores to the guest's encrypted residual part (all under the guest's key), and
read nothing. The loop (:class:`VerticalCoordinator`) is transport-neutral: the Flower ServerApp
gives it an exchange over ``Grid`` messages, the in-process driver of tests and benchmarks one
over direct calls. The steps are numbered as in docs/vertical.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedrisk.federation import vertical as vp
from fedrisk.federation.vertical import Packet, for_party
from fedrisk.ml.vertical import VerticalParams
from secure_agg.vertical import PartyKey

Exchange = Callable[[Mapping[int, Packet]], dict[int, Packet]]
"""Send one packet to each named node; return each node's answer."""


class VerticalRunError(RuntimeError):
    """The parties of a vertical run do not form a valid federation (one guest, 1+ hosts)."""


@dataclass
class EpochRecord:
    """What one epoch cost and how the model did (public numbers only)."""

    epoch: int
    seconds: float
    valid_auc: float
    bytes_per_party: dict[str, int]


@dataclass
class VerticalResult:
    """The run's public outcome."""

    parties: dict[str, str]
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    released: dict[str, str] = field(default_factory=dict)
    alignment: dict[str, Any] | None = None
    """The set and intersection sizes of the run's private set intersection, if it aligned."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "parties": self.parties,
            "best_epoch": self.best_epoch,
            "released": self.released,
            "history": [e.__dict__ for e in self.history],
        }


class VerticalCoordinator:
    """Runs the steps of every mini-batch, validation and release over ``exchange``."""

    def __init__(
        self,
        params: VerticalParams,
        *,
        exchange: Exchange,
        model_id: str,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> None:
        self.params = params
        self._exchange = exchange
        self.model_id = model_id
        self._on_epoch = on_epoch
        self._bytes: dict[int, int] = {}

    def _send(self, packets: Mapping[int, Packet]) -> dict[int, Packet]:
        replies = self._exchange(packets)
        missing = sorted(set(packets) - set(replies))
        if missing:
            raise VerticalRunError(
                f"nodes {missing} did not answer step {next(iter(packets.values())).step}"
            )
        for node, packet in packets.items():
            self._bytes[node] = self._bytes.get(node, 0) + packet.nbytes() + replies[node].nbytes()
        return replies

    def run(self, nodes: list[int]) -> VerticalResult:
        """Set up keys, train until early stopping or the epoch budget, release the parts."""
        first = self._send({n: Packet(vp.STEP_SETUP) for n in nodes})
        guests = [n for n in nodes if first[n].meta["role"] == "guest"]
        hosts = [n for n in nodes if first[n].meta["role"] == "host"]
        if len(guests) != 1 or not hosts:
            raise VerticalRunError(
                f"a vertical run needs exactly one guest and at least one host; got "
                f"{len(guests)} guests and {len(hosts)} hosts"
            )
        guest = guests[0]
        name = {n: str(first[n].meta["party"]) for n in nodes}
        # Each key travels as [key, its owner's signature]: relayed whole, checked by the
        # receivers against the owner's roster key (the coordinator cannot swap one).
        ctx = {n: first[n].enc[vp.PUBLIC_CONTEXT] for n in nodes}
        guest_key = PartyKey.from_bytes(ctx[guest][0])
        if guest_key.secret:
            raise VerticalRunError("the guest sent a secret context; the coordinator refuses it")
        # Hosts get the guest's public context and every host's X25519 key (their zero-sum
        # masks); the guest gets every host's public context.
        x25519 = {for_party(vp.X25519, name[h]): first[h].enc[vp.X25519] for h in hosts}
        setup = {
            h: Packet(
                vp.STEP_SETUP,
                enc={for_party(vp.PUBLIC_CONTEXT, name[guest]): ctx[guest], **x25519},
            )
            for h in hosts
        }
        setup[guest] = Packet(
            vp.STEP_SETUP, enc={for_party(vp.PUBLIC_CONTEXT, name[h]): ctx[h] for h in hosts}
        )
        plan = self._send(setup)[guest]
        # Each host fits its preprocessing on the training customers the guest names (under
        # the host's key), and answers its width.
        installed = self._send(
            {
                h: Packet(
                    vp.STEP_INSTALL,
                    meta={
                        "rows": plan.meta[for_party("rows", name[h])],
                        "partial": plan.meta[for_party("partial", name[h])],
                    },
                    enc={vp.ROWS: plan.enc[for_party(vp.ROWS, name[h])]},
                )
                for h in hosts
            }
        )
        n_train = int(first[guest].meta["train_rows"])
        batch_sizes = [
            min(self.params.batch_size, n_train - start)
            for start in range(0, n_train, self.params.batch_size)
        ]
        features = {h: int(installed[h].meta["features"]) for h in hosts}
        result = VerticalResult(parties={name[n]: str(first[n].meta["role"]) for n in nodes})
        base: vp.Meta = {
            "guest": name[guest],
            "guest_features": int(first[guest].meta["features"]),
            "hosts": json.dumps([name[h] for h in hosts]),
        }
        base.update({for_party("features", name[h]): features[h] for h in hosts})
        self._ids = _Ids(guest=guest, hosts=hosts, name=name, guest_key=guest_key)
        self._valid_rows = int(first[guest].meta["valid_rows"])
        pending: dict[int, np.ndarray] = {}
        mark_best = False
        for epoch in range(self.params.epochs):
            started = time.perf_counter()
            self._bytes = {}
            refs = self._send({guest: Packet(vp.STEP_PLAN, meta={**base, "epoch": epoch})})[guest]
            for batch, size in enumerate(batch_sizes):
                meta = {
                    **base,
                    "epoch": epoch,
                    "batch": batch,
                    "slots": size,
                    "n": size,
                    "mark_best": mark_best,
                }
                mark_best = False
                pending = self._batch(meta, refs, pending)
            verdict = self._validate({**base, "epoch": epoch}, refs, pending)
            pending = {}
            mark_best = bool(verdict.meta["improved"])
            record = EpochRecord(
                epoch=epoch + 1,
                seconds=time.perf_counter() - started,
                valid_auc=float(verdict.masked[vp.VALID_AUC][0]),
                bytes_per_party={name[n]: b for n, b in self._bytes.items()},
            )
            result.history.append(record)
            result.best_epoch = int(verdict.meta["best_epoch"])
            if self._on_epoch is not None:
                self._on_epoch(record)
            if verdict.meta["stop"]:
                break
        released = self._send(
            {
                n: Packet(
                    vp.STEP_RELEASE,
                    meta={
                        "model_id": self.model_id,
                        "parties": json.dumps(sorted(name.values())),
                        "mark_best": mark_best,
                    },
                )
                for n in nodes
            }
        )
        result.released = {name[n]: str(p.meta["path"]) for n, p in released.items()}
        return result

    def _sum_for(self, replies: Mapping[int, Packet], dest: str) -> list[bytes]:
        """The hosts' re-encrypted values for ``dest`` summed under the guest's key (their
        zero-sum masks cancel here)."""
        ids = self._ids
        return ids.guest_key.add(
            *(replies[h].enc[for_party(vp.U_FOR_GUEST, dest)] for h in ids.hosts)
        )

    def _scores(
        self, step: str, meta: vp.Meta, refs: Packet, key: str, pending: Mapping[int, np.ndarray]
    ) -> dict[int, Packet]:
        """Steps 1 / V1: each host gets its padded references (under its own key) and, from
        the batch before, its flooded sums."""
        ids = self._ids
        return self._send(
            {
                h: Packet(
                    step,
                    meta=meta,
                    enc={vp.ROWS: refs.enc[for_party(vp.ROWS, f"{ids.name[h]}/{key}")]},
                    masked=_sums(pending, h),
                )
                for h in ids.hosts
            }
        )

    def _to_guest(self, step: str, meta: vp.Meta, scores: Mapping[int, Packet]) -> Packet:
        """Steps 2 / V2: the hosts' scores (under their own keys) to the guest."""
        ids = self._ids
        enc = {for_party(vp.U_OWN, ids.name[h]): scores[h].enc[vp.U_OWN] for h in ids.hosts}
        return self._send({ids.guest: Packet(step, meta=meta, enc=enc)})[ids.guest]

    def _batch(
        self, meta: vp.Meta, refs: Packet, pending: Mapping[int, np.ndarray]
    ) -> dict[int, np.ndarray]:
        ids = self._ids
        name, guest, hosts = ids.name, ids.guest, ids.hosts
        # Step 1: hosts finish the previous batch and send their scores under their own keys.
        scores = self._scores(vp.STEP_SCORES, meta, refs, str(meta["batch"]), pending)
        # Step 2: the guest's residual parts, cross-term products and masked scores.
        residual = self._to_guest(vp.STEP_RESIDUAL, meta, scores)
        # Step 3: hosts decrypt the guest's products (flooded sums back) and re-encrypt the
        # masked scores under the guest's key.
        converted = self._send(
            {
                h: Packet(
                    vp.STEP_CONVERT,
                    meta=meta,
                    enc={
                        vp.PRODUCTS: residual.enc[for_party(vp.PRODUCTS, name[h])],
                        **{
                            for_party(vp.CONVERT, name[d]): residual.enc[
                                for_party(vp.CONVERT, f"{name[h]}/{name[d]}")
                            ]
                            for d in hosts
                        },
                    },
                )
                for h in hosts
            }
        )
        # Step 4: each host's residual [[4d_k]] (zero on its padding) and its products.
        grads = self._send(
            {
                h: Packet(
                    vp.STEP_GRADIENT,
                    meta=meta,
                    enc={
                        vp.D4_ENC: ids.guest_key.add(
                            residual.enc[for_party(vp.C_ENC, name[h])],
                            self._sum_for(converted, name[h]),
                        )
                    },
                )
                for h in hosts
            }
        )
        # Step 5: the guest updates and decrypts the hosts' products.
        update = self._send(
            {
                guest: Packet(
                    vp.STEP_UPDATE,
                    meta=meta,
                    enc={for_party(vp.PRODUCTS, name[h]): grads[h].enc[vp.PRODUCTS] for h in hosts},
                    masked={
                        for_party(vp.SUMS, name[h]): converted[h].masked[vp.SUMS] for h in hosts
                    },
                )
            }
        )[guest]
        return {h: update.masked[for_party(vp.SUMS, name[h])] for h in hosts}

    def _validate(self, meta: vp.Meta, refs: Packet, pending: Mapping[int, np.ndarray]) -> Packet:
        """Steps V1-V4: the hosts' validation scores, zeroed on the padding by the guest,
        re-encrypted under its key, summed; the guest's verdict."""
        ids = self._ids
        name, guest, hosts = ids.name, ids.guest, ids.hosts
        scores = self._scores(
            vp.STEP_VALID_SCORES, {**meta, "slots": self._valid_rows}, refs, vp.VALID, pending
        )
        masked = self._to_guest(vp.STEP_VALID_CONVERT, meta, scores)
        converted = self._send(
            {
                h: Packet(
                    vp.STEP_CONVERT,
                    meta={**meta, "slots": self._valid_rows},
                    enc={
                        for_party(vp.CONVERT, vp.VALID): masked.enc[
                            for_party(vp.CONVERT, f"{name[h]}/{vp.VALID}")
                        ]
                    },
                )
                for h in hosts
            }
        )
        return self._send(
            {
                guest: Packet(
                    vp.STEP_VALIDATE,
                    meta={"epoch": int(meta["epoch"]) + 1},
                    enc={vp.U_FOR_GUEST: self._sum_for(converted, vp.VALID)},
                )
            }
        )[guest]


@dataclass(frozen=True)
class _Ids:
    """Who is who in a run (node ids, names, the guest's public key)."""

    guest: int
    hosts: list[int]
    name: Mapping[int, str]
    guest_key: PartyKey


def _sums(pending: Mapping[int, np.ndarray], host: int) -> dict[str, np.ndarray]:
    return {vp.SUMS: pending[host]} if host in pending else {}
