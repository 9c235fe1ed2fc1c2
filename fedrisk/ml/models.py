"""Torch risk models (logistic regression, MLP), their flat weight vectors and pickle-free files."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedrisk.errors import ModelError
from fedrisk.files import write_atomic
from fedrisk.ml.inference import ModelSpec, count_parameters, parameter_layout

__all__ = [
    "MODEL_FILE",
    "WEIGHTS_FILE",
    "ModelSpec",
    "RiskModel",
    "build_model",
    "count_parameters",
    "get_logit_offset",
    "initial_weights",
    "load_model",
    "load_vector",
    "model_to_vector",
    "save_model",
    "set_logit_offset",
]

MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.f64"
_FORMAT = "fedrisk.model/1"


class RiskModel(nn.Module):
    """A stack of dense layers with ReLU between them, returning one logit per row.

    With no hidden layer this is logistic regression. The scalar ``logit_offset`` buffer undoes
    the prior shift of class-weighted training: training sets it, :func:`save_model` keeps it,
    and scoring (:class:`fedrisk.ml.inference.NumpyScorer`, not :meth:`forward`) adds it. It is
    not persistent, so it stays out of the ``state_dict`` and the weight vector that federated
    rounds average.
    """

    logit_offset: torch.Tensor

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        sizes = spec.layer_sizes
        # Built on the meta device, so torch's global RNG is never drawn; build_model initialises
        # every parameter from the caller's generator.
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out, device="meta").to_empty(device="cpu")
            for n_in, n_out in itertools.pairwise(sizes)
        )
        self.register_buffer("logit_offset", torch.zeros((), dtype=torch.float64), persistent=False)
        self.spec = spec

    def set_logit_offset(self, offset: float) -> None:
        """Set the calibration offset; same as :func:`fedrisk.ml.models.set_logit_offset`."""
        set_logit_offset(self, offset)

    @property
    def linears(self) -> list[nn.Linear]:
        """The dense layers, input to output."""
        return [layer for layer in self.layers if isinstance(layer, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the raw logits, shape ``(n,)``."""
        h = x
        layers = self.linears
        for layer in layers[:-1]:
            h = torch.relu(layer(h))
        out: torch.Tensor = layers[-1](h)
        return out.squeeze(-1)


def build_model(spec: ModelSpec, *, generator: torch.Generator) -> RiskModel:
    """Build a freshly initialised model.

    Hidden layers get PyTorch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` initialisation,
    drawn from ``generator``. Logistic regression starts at zero: its loss is convex, so a
    random start only adds noise.

    Parameters
    ----------
    spec
        Architecture.
    generator
        Source of the initial weights; the global torch RNG is never touched.
    """
    model = RiskModel(spec)
    with torch.no_grad():
        for layer in model.linears:
            if spec.kind == "lr":
                layer.weight.zero_()
                layer.bias.zero_()
                continue
            bound = 1.0 / math.sqrt(layer.in_features)
            for param in (layer.weight, layer.bias):
                param.copy_(torch.rand(param.shape, generator=generator) * (2 * bound) - bound)
    return model


def initial_weights(spec: ModelSpec, *, generator: torch.Generator) -> npt.NDArray[np.float64]:
    """The weight vector of a fresh :func:`build_model` (where a federated run starts)."""
    return model_to_vector(build_model(spec, generator=generator))


def _check_model(model: nn.Module) -> RiskModel:
    if not isinstance(model, RiskModel):
        raise ModelError(f"model must be a RiskModel from build_model; got {type(model).__name__}")
    return model


def model_to_vector(model: nn.Module) -> npt.NDArray[np.float64]:
    """Concatenate the parameters into one float64 vector, in :func:`parameter_layout` order."""
    risk_model = _check_model(model)
    state = risk_model.state_dict()
    parts = [
        state[name].detach().reshape(-1).to(torch.float64).cpu().numpy()
        for name, _ in parameter_layout(risk_model.spec)
    ]
    return np.concatenate(parts)


def load_vector(model: nn.Module, vector: npt.ArrayLike) -> None:
    """Copy a weight vector (as from :func:`model_to_vector`) into ``model`` in place.

    Raises
    ------
    ModelError
        If the vector is not 1-D, has the wrong length, or holds NaN/inf.
    """
    risk_model = _check_model(model)
    # A writable copy: torch.from_numpy warns on read-only buffers (e.g. np.frombuffer).
    flat = np.array(vector, dtype=np.float64)
    expected = count_parameters(risk_model.spec)
    if flat.ndim != 1 or flat.shape[0] != expected:
        raise ModelError(
            f"vector must be one-dimensional with {expected} values for spec "
            f"{risk_model.spec.layer_sizes}; got shape {flat.shape}"
        )
    if not np.isfinite(flat).all():
        raise ModelError("vector must be finite; got NaN/inf weights")
    params = dict(risk_model.named_parameters())
    pos = 0
    with torch.no_grad():
        for name, shape in parameter_layout(risk_model.spec):
            size = math.prod(shape)
            block = torch.from_numpy(flat[pos : pos + size].reshape(shape))
            params[name].copy_(block)
            pos += size


def get_logit_offset(model: nn.Module) -> float:
    """The calibration offset that scoring adds to the model's logits."""
    return float(_check_model(model).logit_offset.item())


def set_logit_offset(model: nn.Module, offset: float) -> None:
    """Set the calibration offset (see :func:`fedrisk.ml.training.logit_offset_for`).

    Raises
    ------
    ModelError
        If ``offset`` is not finite.
    """
    if not math.isfinite(offset):
        raise ModelError(f"offset must be finite; got {offset}")
    risk_model = _check_model(model)
    risk_model.logit_offset.fill_(float(offset))


def save_model(model: nn.Module, spec: ModelSpec, directory: Path) -> None:
    """Write ``model`` to ``directory`` without pickle.

    ``model.json`` holds the spec, the logit offset, the weight count and the SHA-256 of
    ``weights.f64``, which holds the weight vector as raw little-endian float64.

    Raises
    ------
    ModelError
        If ``spec`` does not describe ``model`` or the directory cannot be written.
    """
    risk_model = _check_model(model)
    if risk_model.spec != spec:
        raise ModelError(f"spec must describe the model; got {spec!r} for {risk_model.spec!r}")
    weights_bytes = model_to_vector(risk_model).astype("<f8").tobytes()
    header = {
        "format": _FORMAT,
        "spec": spec.model_dump(mode="json"),
        "logit_offset": get_logit_offset(risk_model),
        "n_weights": count_parameters(spec),
        "dtype": "<f8",
        "weights_sha256": hashlib.sha256(weights_bytes).hexdigest(),
    }
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Weights first: a crash in between leaves a header that refuses the stale weights.
        write_atomic(directory / WEIGHTS_FILE, weights_bytes)
        write_atomic(directory / MODEL_FILE, json.dumps(header, indent=2).encode("utf-8"))
    except OSError as e:
        raise ModelError(
            f"directory must be writable; could not save model to {directory}: {e}"
        ) from e


def load_model(directory: Path) -> tuple[RiskModel, ModelSpec]:
    """Read a model written by :func:`save_model`.

    Raises
    ------
    ModelError
        If a file is missing, unreadable, truncated or altered (checksum mismatch).
    """
    directory = Path(directory)
    try:
        header_bytes = (directory / MODEL_FILE).read_bytes()
        weights_bytes = (directory / WEIGHTS_FILE).read_bytes()
    except OSError as e:
        raise ModelError(f"model directory must hold {MODEL_FILE} and {WEIGHTS_FILE}; {e}") from e
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{directory / MODEL_FILE} must be UTF-8 JSON; {e}") from e
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise ModelError(f"{directory / MODEL_FILE} must be a {_FORMAT!r} header")
    try:
        # pydantic's ValidationError is a ValueError.
        spec = ModelSpec.model_validate(header["spec"])
        offset = float(header["logit_offset"])
        n_weights = int(header["n_weights"])
        digest = str(header["weights_sha256"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{directory / MODEL_FILE} must be a valid model header; {e}") from e
    expected = count_parameters(spec)
    if n_weights != expected or len(weights_bytes) != 8 * expected:
        raise ModelError(
            f"{WEIGHTS_FILE} must hold {expected} float64 values ({8 * expected} bytes); "
            f"got {len(weights_bytes)} bytes (header says {n_weights} values)"
        )
    if hashlib.sha256(weights_bytes).hexdigest() != digest:
        raise ModelError(f"{WEIGHTS_FILE} checksum must match {MODEL_FILE}; the file was altered")
    model = RiskModel(spec)
    load_vector(model, np.frombuffer(weights_bytes, dtype="<f8"))
    set_logit_offset(model, offset)
    return model, spec
