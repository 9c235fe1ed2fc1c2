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
import math
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
        ctx = {n: first[n].enc[vp.PUBLIC_CONTEXT][0] for n in nodes}
        guest_key = PartyKey.from_bytes(ctx[guest])
        if guest_key.secret:
            raise VerticalRunError("the guest sent a secret context; the coordinator refuses it")
        # Hosts get the guest's public context and every host's X25519 key (their zero-sum
        # masks); the guest gets every host's public context.
        x25519 = {for_party(vp.X25519, name[h]): first[h].enc[vp.X25519] for h in hosts}
        setup = {
            h: Packet(
                vp.STEP_SETUP,
                enc={for_party(vp.PUBLIC_CONTEXT, name[guest]): [ctx[guest]], **x25519},
            )
            for h in hosts
        }
        setup[guest] = Packet(
            vp.STEP_SETUP, enc={for_party(vp.PUBLIC_CONTEXT, name[h]): [ctx[h]] for h in hosts}
        )
        self._send(setup)
        n_train = int(first[guest].meta["train_rows"])
        n_batches = math.ceil(n_train / self.params.batch_size)
        features = {h: int(first[h].meta["features"]) for h in hosts}
        result = VerticalResult(parties={name[n]: str(first[n].meta["role"]) for n in nodes})
        base: vp.Meta = {"guest": name[guest], "guest_features": int(first[guest].meta["features"])}
        base.update({for_party("features", name[h]): features[h] for h in hosts})
        pending: dict[int, np.ndarray] = {}
        mark_best = False
        for epoch in range(self.params.epochs):
            started = time.perf_counter()
            self._bytes = {}
            for batch in range(n_batches):
                meta = {**base, "epoch": epoch, "batch": batch, "mark_best": mark_best}
                mark_best = False
                pending = self._batch(meta, guest, hosts, name, guest_key, pending)
            # Step 5-6: validation (the hosts' pending updates are applied first).
            scores = self._send(
                {
                    h: Packet(
                        vp.STEP_VALID_SCORES,
                        meta={**base, "epoch": epoch},
                        masked=_sums(pending, h),
                    )
                    for h in hosts
                }
            )
            pending = {}
            summed = guest_key.add(*(scores[h].enc[vp.U_FOR_GUEST] for h in hosts))
            verdict = self._send(
                {
                    guest: Packet(
                        vp.STEP_VALIDATE, meta={"epoch": epoch + 1}, enc={vp.U_FOR_GUEST: summed}
                    )
                }
            )[guest]
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

    def _batch(
        self,
        meta: vp.Meta,
        guest: int,
        hosts: list[int],
        name: Mapping[int, str],
        guest_key: PartyKey,
        pending: Mapping[int, np.ndarray],
    ) -> dict[int, np.ndarray]:
        # Step 1: hosts finish the previous batch and send their scores, encrypted twice.
        scores = self._send(
            {h: Packet(vp.STEP_SCORES, meta=meta, masked=_sums(pending, h)) for h in hosts}
        )
        u_sum = guest_key.add(*(scores[h].enc[vp.U_FOR_GUEST] for h in hosts))
        # Step 2: the guest's residual part, and masked products for its cross terms.
        residual = self._send(
            {
                guest: Packet(
                    vp.STEP_RESIDUAL,
                    meta=meta,
                    enc={for_party(vp.U_OWN, name[h]): scores[h].enc[vp.U_OWN] for h in hosts},
                )
            }
        )[guest]
        d4 = guest_key.add(residual.enc[vp.C_ENC], u_sum)
        # Step 3: hosts decrypt the guest's products and build theirs on [[4d]].
        grads = self._send(
            {
                h: Packet(
                    vp.STEP_GRADIENT,
                    meta=meta,
                    enc={vp.D4_ENC: d4, vp.PRODUCTS: residual.enc[for_party(vp.PRODUCTS, name[h])]},
                )
                for h in hosts
            }
        )
        # Step 4: the guest updates and decrypts the hosts' products.
        update = self._send(
            {
                guest: Packet(
                    vp.STEP_UPDATE,
                    meta=meta,
                    enc={for_party(vp.PRODUCTS, name[h]): grads[h].enc[vp.PRODUCTS] for h in hosts},
                    masked={for_party(vp.SUMS, name[h]): grads[h].masked[vp.SUMS] for h in hosts},
                )
            }
        )[guest]
        return {h: update.masked[for_party(vp.SUMS, name[h])] for h in hosts}


def _sums(pending: Mapping[int, np.ndarray], host: int) -> dict[str, np.ndarray]:
    return {vp.SUMS: pending[host]} if host in pending else {}
