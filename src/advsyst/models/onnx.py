"""ONNX models: evaluated by onnxruntime, differentiated through a torch re-interpretation.

:class:`OnnxModel` holds an ONNX file's bytes (so it pickles to dask workers) and runs it
with onnxruntime.  :func:`onnx_to_torch` re-executes the same graph with torch operations
for the operators listed in :data:`SUPPORTED_OPS` (the ones that dense, convolution-free
taggers exported by ``torch.onnx.export`` or Keras use, including DeepSets-style sums
over particles), which gives exact autograd input gradients.  :class:`OnnxAdapter`
uses onnxruntime for every prediction and the torch graph for gradients, after checking
on the first batch that both agree; graphs with other operators (tree ensembles from
skl2onnx, for instance) fall back to finite differences
(:class:`~advsyst.attacks.model.BlackBoxAdapter`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advsyst.attacks.model import BlackBoxAdapter, ModelAdapter
from advsyst.errors import InputError, ModelOutputError

__all__ = ["OnnxModel", "OnnxAdapter", "UnsupportedOnnxGraph", "onnx_to_torch", "SUPPORTED_OPS"]

log = logging.getLogger(__name__)

_NP_OF_ONNX = {"tensor(float)": np.float32, "tensor(double)": np.float64,
               "tensor(float16)": np.float16, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32, "tensor(bool)": np.bool_}  # fmt: skip


class UnsupportedOnnxGraph(InputError):
    """The graph uses operators :func:`onnx_to_torch` does not implement."""


class OnnxModel:
    """An ONNX classifier run by onnxruntime; ``model(X)`` returns the chosen output.

    Parameters
    ----------
    source
        Path of a ``.onnx`` file, or its bytes.
    output_name
        The output holding the class scores.  Default: the first tensor output whose name
        contains ``"prob"``, else the first float tensor output, else a ZipMap
        (skl2onnx's list of ``{class: probability}``), converted to ``(n, k)``.
    providers
        onnxruntime execution providers (default: CPU).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | bytes,
        *,
        output_name: str | None = None,
        providers: list[str] | None = None,
    ) -> None:
        if isinstance(source, bytes):
            self.name, self.data = "ONNX model", source
        else:
            p = Path(source)
            if not p.is_file():
                raise InputError(f"model file {str(p)!r} does not exist or is not a file")
            self.name, self.data = f"ONNX model {p.name!r}", p.read_bytes()
        self.providers = list(providers or ["CPUExecutionProvider"])
        self._session: Any = None
        sess = self.session
        self.input_names = [i.name for i in sess.get_inputs()]
        self.input_dtypes = [_NP_OF_ONNX.get(i.type, np.float32) for i in sess.get_inputs()]
        outs = sess.get_outputs()
        names = [o.name for o in outs]
        if output_name is not None:
            if output_name not in names:
                raise InputError(f"{self.name} has no output {output_name!r}; outputs: {names}")
            self.output_name = output_name
        else:
            floats = [o.name for o in outs if o.type in ("tensor(float)", "tensor(double)")]
            probs = [n for n in floats if "prob" in n.lower()]
            seqs = [o.name for o in outs if o.type.startswith("seq(map")]
            pick = (probs or floats or seqs or [None])[0]
            if pick is None:
                raise InputError(f"{self.name}: no float or ZipMap output among {names}")
            self.output_name = pick
        import onnx

        graph = onnx.load_from_string(self.data).graph
        #: operator types of the graph (``domain.op`` outside the default domain)
        self.op_types = frozenset(
            (n.domain + "." if n.domain not in ("", "ai.onnx") else "") + n.op_type
            for n in graph.node
        )
        shape = sess.get_inputs()[0].shape
        self.n_features: int | None = None
        if len(self.input_names) == 1 and len(shape) == 2 and isinstance(shape[1], int):
            self.n_features = int(shape[1])

    @property
    def piecewise_constant(self) -> bool:
        """True for tree ensembles (their input gradient is zero almost everywhere)."""
        return any("TreeEnsemble" in op for op in self.op_types)

    @property
    def session(self) -> Any:
        """The onnxruntime session (created on first use, also after unpickling)."""
        if self._session is None:
            import onnxruntime as ort

            try:
                self._session = ort.InferenceSession(self.data, providers=self.providers)
            except Exception as exc:
                raise InputError(f"cannot load {self.name} with onnxruntime: {exc}") from exc
        return self._session

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_session"] = None
        return state

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        if len(arrays) != len(self.input_names):
            raise InputError(
                f"{self.name} takes {len(self.input_names)} input(s) {self.input_names}, "
                f"got {len(arrays)}"
            )
        feed = {
            n: np.ascontiguousarray(a, dtype=dt)
            for n, a, dt in zip(self.input_names, arrays, self.input_dtypes, strict=True)
        }
        (out,) = self.session.run([self.output_name], feed)
        if isinstance(out, list):  # ZipMap: one {class: probability} per event
            if not out:
                return np.zeros((0, 2))
            keys = sorted(out[0])
            out = np.array([[row[k] for k in keys] for row in out], dtype=np.float64)
        return np.asarray(out)

    def to_torch(self) -> torch.nn.Module:
        """The graph as a torch module (see :func:`onnx_to_torch`)."""
        return onnx_to_torch(self.data, self.output_name)


# ---------------------------------------------------------------------- torch interpreter
def _axes(node_attrs: dict[str, Any], inputs: list[Any], pos: int) -> list[int] | None:
    if "axes" in node_attrs:
        return [int(a) for a in node_attrs["axes"]]
    if len(inputs) > pos and inputs[pos] is not None:
        return [int(a) for a in inputs[pos].reshape(-1).tolist()]
    return None


def _reduce(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def op(a: dict[str, Any], x: torch.Tensor, *rest: Any) -> torch.Tensor:
        axes = _axes(a, [x, *rest], 1)
        keep = bool(a.get("keepdims", 1))
        if axes is None or len(axes) == 0:
            if a.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return fn(x, axes, keep)

    return op


def _reshape(a: dict[str, Any], x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    s = [int(v) for v in shape.reshape(-1).tolist()]
    if not a.get("allowzero", 0):
        s = [x.shape[i] if v == 0 else v for i, v in enumerate(s)]
    return x.reshape(s)


def _gemm(a: dict[str, Any], A: torch.Tensor, B: torch.Tensor, C: Any = None) -> torch.Tensor:
    if a.get("transA", 0):
        A = A.t()
    if a.get("transB", 0):
        B = B.t()
    y = float(a.get("alpha", 1.0)) * (A @ B)
    return y if C is None else y + float(a.get("beta", 1.0)) * C


def _batchnorm(a: dict[str, Any], x, scale, bias, mean, var, *_):
    shape = [1, -1] + [1] * (x.dim() - 2)
    inv = scale.reshape(shape) / torch.sqrt(var.reshape(shape) + float(a.get("epsilon", 1e-5)))
    return (x - mean.reshape(shape)) * inv + bias.reshape(shape)


def _softmax(log: bool) -> Callable[..., torch.Tensor]:
    def op(a: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
        axis = int(a.get("axis", -1))
        f = torch.log_softmax if log else torch.softmax
        return f(x, dim=axis)

    return op


def _slice(a, x, starts, ends, axes=None, steps=None):
    st = [int(v) for v in starts.tolist()]
    en = [int(v) for v in ends.tolist()]
    ax = [int(v) for v in axes.tolist()] if axes is not None else list(range(len(st)))
    sp = [int(v) for v in steps.tolist()] if steps is not None else [1] * len(st)
    idx = [slice(None)] * x.dim()
    for s, e, k, p in zip(st, en, ax, sp, strict=True):
        if p != 1:
            raise UnsupportedOnnxGraph("Slice with step != 1")
        n = x.shape[k]
        idx[k] = slice(max(min(s, n), -n), max(min(e, n), -n - 1) if e < 0 else min(e, n))
    return x[tuple(idx)]


def _clip(a, x, lo=None, hi=None):
    lo = a.get("min", lo)
    hi = a.get("max", hi)
    if lo is not None:
        x = torch.maximum(x, torch.as_tensor(lo, dtype=x.dtype))
    if hi is not None:
        x = torch.minimum(x, torch.as_tensor(hi, dtype=x.dtype))
    return x


def _cast(a, x):
    import onnx

    np_t = onnx.helper.tensor_dtype_to_np_dtype(int(a["to"]))
    return x.to(torch.from_numpy(np.zeros(0, dtype=np_t)).dtype)


def _unsqueeze(a, x, axes=None):
    ax = sorted(_axes(a, [x, axes], 1) or [])
    for k in ax:
        x = x.unsqueeze(k if k >= 0 else k + x.dim() + 1)
    return x


def _squeeze(a, x, axes=None):
    ax = _axes(a, [x, axes], 1)
    if ax is None:
        return x.squeeze()
    for k in sorted((k % x.dim() for k in ax), reverse=True):
        x = x.squeeze(k)
    return x


def _const_of_shape(a, shape):
    val = a.get("value")
    v = torch.zeros(1) if val is None else val
    return v.reshape(-1)[0].expand([int(s) for s in shape.tolist()]).clone()


def _variadic(fn):
    def op(a, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out

    return op


_OPS: dict[str, Callable[..., Any]] = {
    "Identity": lambda a, x: x,
    "Dropout": lambda a, x, *_: x,
    "Add": lambda a, x, y: x + y,
    "Sub": lambda a, x, y: x - y,
    "Mul": lambda a, x, y: x * y,
    "Div": lambda a, x, y: x / y,
    "Pow": lambda a, x, y: torch.pow(x, y),
    "Neg": lambda a, x: -x,
    "Abs": lambda a, x: x.abs(),
    "Exp": lambda a, x: x.exp(),
    "Log": lambda a, x: x.log(),
    "Sqrt": lambda a, x: x.sqrt(),
    "Erf": lambda a, x: torch.erf(x),
    "Relu": lambda a, x: torch.relu(x),
    "LeakyRelu": lambda a, x: torch.nn.functional.leaky_relu(x, float(a.get("alpha", 0.01))),
    "Elu": lambda a, x: torch.nn.functional.elu(x, float(a.get("alpha", 1.0))),
    "Selu": lambda a, x: torch.selu(x),
    "Sigmoid": lambda a, x: torch.sigmoid(x),
    "Tanh": lambda a, x: torch.tanh(x),
    "Softplus": lambda a, x: torch.nn.functional.softplus(x),
    "Softmax": _softmax(False),
    "LogSoftmax": _softmax(True),
    "Gemm": _gemm,
    "MatMul": lambda a, x, y: x @ y,
    "BatchNormalization": _batchnorm,
    "Flatten": lambda a, x: x.reshape(int(np.prod(x.shape[: int(a.get("axis", 1))])), -1),
    "Reshape": _reshape,
    "Transpose": lambda a, x: x.permute(
        *[int(p) for p in a.get("perm", list(range(x.dim()))[::-1])]
    ),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda a, *xs: torch.cat(xs, dim=int(a["axis"])),
    "ReduceSum": _reduce(lambda x, ax, k: x.sum(dim=ax, keepdim=k)),
    "ReduceMean": _reduce(lambda x, ax, k: x.mean(dim=ax, keepdim=k)),
    "ReduceMax": _reduce(lambda x, ax, k: x.amax(dim=ax, keepdim=k)),
    "ReduceMin": _reduce(lambda x, ax, k: x.amin(dim=ax, keepdim=k)),
    "Cast": _cast,
    "Where": lambda a, c, x, y: torch.where(c.bool(), x, y),
    "Equal": lambda a, x, y: x == y,
    "Greater": lambda a, x, y: x > y,
    "Less": lambda a, x, y: x < y,
    "Not": lambda a, x: ~x.bool(),
    "And": lambda a, x, y: x.bool() & y.bool(),
    "Or": lambda a, x, y: x.bool() | y.bool(),
    "Min": _variadic(torch.minimum),
    "Max": _variadic(torch.maximum),
    "Clip": _clip,
    "Shape": lambda a, x: torch.tensor(list(x.shape), dtype=torch.int64),
    "Gather": lambda a, x, i: torch.index_select(
        x, int(a.get("axis", 0)), i.reshape(-1).long() % x.shape[int(a.get("axis", 0))]
    ).reshape(
        list(x.shape[: int(a.get("axis", 0)) % x.dim()])
        + list(i.shape)
        + list(x.shape[int(a.get("axis", 0)) % x.dim() + 1 :])
    ),
    "Slice": _slice,
    "Expand": lambda a, x, s: x * torch.ones([int(v) for v in s.tolist()], dtype=x.dtype),
    "ConstantOfShape": _const_of_shape,
}
#: Operators (default ONNX domain) that :func:`onnx_to_torch` implements.
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted([*_OPS, "Constant"]))


class _OnnxGraphModule(torch.nn.Module):
    """Executes an ONNX graph node by node with torch operations (for autograd)."""

    def __init__(self, consts, nodes, inputs, output, logit_of, n_features) -> None:
        super().__init__()
        self._names = list(consts)
        for i, name in enumerate(self._names):
            self.register_buffer(f"c{i}", consts[name])
        self._nodes = nodes
        self._inputs = inputs
        self._output = output
        # a final Sigmoid/Softmax is skipped: the attack differentiates the logits
        self._stop = logit_of
        self.advsyst_output = "logit" if logit_of is not None else "auto"
        if n_features is not None:
            self.n_features = n_features

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = {n: getattr(self, f"c{i}") for i, n in enumerate(self._names)}
        env[""] = None
        env.update(zip(self._inputs, xs, strict=True))
        target = self._stop if self._stop is not None else self._output
        for op, ins, outs, attrs in self._nodes:
            vals = _OPS[op](attrs, *[env[i] for i in ins])
            env[outs[0]] = vals
            if outs[0] == target:
                break
        return env[target]


def onnx_to_torch(model: bytes | str | os.PathLike[str], output_name: str | None = None):
    """Re-express an ONNX graph as a torch module (for exact input gradients).

    Raises
    ------
    UnsupportedOnnxGraph
        Naming the operators outside :data:`SUPPORTED_OPS` (or foreign domains such as
        ``ai.onnx.ml`` tree ensembles).
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    g = proto.graph
    bad = sorted(
        {
            (n.domain + "." if n.domain not in ("", "ai.onnx") else "") + n.op_type
            for n in g.node
            if n.domain not in ("", "ai.onnx")
            or (n.op_type not in _OPS and n.op_type != "Constant")
        }
    )
    if bad:
        raise UnsupportedOnnxGraph(f"operators without a torch translation: {bad}")
    consts: dict[str, torch.Tensor] = {
        t.name: torch.from_numpy(np.array(numpy_helper.to_array(t))) for t in g.initializer
    }
    nodes = []
    producer: dict[str, tuple[str, list[str]]] = {}
    for n in g.node:
        attrs: dict[str, Any] = {}
        for at in n.attribute:
            v = onnx.helper.get_attribute_value(at)
            if isinstance(v, onnx.TensorProto):
                v = torch.from_numpy(np.array(numpy_helper.to_array(v)))
            elif isinstance(v, bytes):
                v = v.decode()
            attrs[at.name] = v
        if n.op_type == "Constant":
            val = attrs.get("value")
            if val is None:
                for key in ("value_float", "value_floats", "value_int", "value_ints"):
                    if key in attrs:
                        val = torch.tensor(attrs[key])
            if val is None:
                raise UnsupportedOnnxGraph(
                    f"Constant node {n.name!r} with attributes {list(attrs)}"
                )
            consts[n.output[0]] = val
            continue
        nodes.append((n.op_type, list(n.input), list(n.output), attrs))
        producer[n.output[0]] = (n.op_type, list(n.input))
    init = set(consts)
    inputs = [i.name for i in g.input if i.name not in init]
    output = output_name or g.output[0].name
    logit_of = None
    cur = output
    while cur in producer and producer[cur][0] == "Identity":
        cur = producer[cur][1][0]
    if cur in producer and producer[cur][0] in ("Sigmoid", "Softmax"):
        logit_of = producer[cur][1][0]
    n_features = None
    if len(inputs) == 1:
        dims = next(i for i in g.input if i.name == inputs[0]).type.tensor_type.shape.dim
        if len(dims) == 2 and dims[1].HasField("dim_value"):
            n_features = int(dims[1].dim_value)
    return _OnnxGraphModule(consts, nodes, inputs, output, logit_of, n_features).eval()


@dataclass
class OnnxAdapter(BlackBoxAdapter):
    """onnxruntime predictions; autograd gradients through :func:`onnx_to_torch`.

    On the first gradient request the torch graph's log-probabilities are compared with
    onnxruntime's on that batch; if they differ (or the graph cannot be translated) the
    gradients come from finite differences (:class:`BlackBoxAdapter`), with one warning.
    ``gradient="finite-difference"`` forces that path.
    """

    gradient: str = "auto"

    def __post_init__(self) -> None:
        if self.gradient not in ("auto", "finite-difference"):
            raise InputError(
                f"gradient must be 'auto' or 'finite-difference', got {self.gradient!r}"
            )
        if not isinstance(self.model, OnnxModel):
            raise InputError(f"OnnxAdapter needs an OnnxModel, got {type(self.model).__name__}")
        self.name = self.model.name
        super().__post_init__()
        self._torch: ModelAdapter | None = None
        self._checked = self.gradient == "finite-difference"
        self.gradient_mode = "finite-difference" if self._checked else "pending"

    def _torch_adapter(self, X: np.ndarray, target: np.ndarray) -> ModelAdapter | None:
        self._checked = True
        self.gradient_mode = "finite-difference"
        try:
            module = self.model.to_torch()
        except UnsupportedOnnxGraph as exc:
            log.info("%s: finite-difference gradients (%s)", self.name, exc)
            return None
        probe = X[: min(len(X), 256)]
        try:
            lp_o = self.log_probabilities(probe)
            out = "logit" if module.advsyst_output == "logit" else self.output
            ta = ModelAdapter(
                module, n_features=self.n_features, output=out, batch_size=self.batch_size
            )
            lp_t = ta.log_probabilities(probe)
            ok = lp_t.shape == lp_o.shape and np.allclose(
                np.exp(lp_t), np.exp(lp_o), atol=1e-4, rtol=1e-3
            )
        except (RuntimeError, InputError, ModelOutputError, TypeError, IndexError) as exc:
            log.info("%s: torch translation failed on the first batch: %s", self.name, exc)
            ok = False
        if not ok:
            log.warning(
                "%s: the torch translation of the graph does not reproduce onnxruntime on "
                "the first batch; using finite-difference gradients instead",
                self.name,
            )
            return None
        self.gradient_mode = "autograd"
        return ta

    def loss_gradient(self, X: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Autograd gradient through the torch translation, or finite differences."""
        self._check_x(X)
        X = np.asarray(X, dtype=np.float64)
        if not self._checked and len(X):
            self._torch = self._torch_adapter(X, np.asarray(target))
        if self._torch is not None:
            g = self._torch.loss_gradient(X, target)
            self.calls += self._torch.calls
            self.rows += self._torch.rows
            self._torch.calls = self._torch.rows = 0
            return g
        return super().loss_gradient(X, target)
