"""Recurrent layers, rnn, lstm and gru, as torch.nn.RNN, LSTM and GRU over a batch-first
sequence (N, T, C): stacked layers, both directions, dropout between layers, initial states.

A call has several outputs, the sequence (N, T, directions * hidden) first and then the final
states, each (layers * directions, N, hidden) as PyTorch gives them; the call stands for the
sequence wherever one tensor is wanted (OpDef.leading_output), and `seq, h = x -> gru(64)`
names the states too. ONNX gets one RNN/LSTM/GRU node per layer, time-major (onnxruntime runs
layout 0 only), with each layer's weights reordered to ONNX's gate order as the model is built,
so nothing is reordered at run time."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from dslc.diagnostics import SpecError
from dslc.ir.graph import ParamSpec
from dslc.ir.types import dim_mul
from dslc.ops.base import Attr, OpDef, expect_f32, register
from dslc.ops.init import Init
from dslc.ops.pycode import attr, ctor, dim, lit

COMMON = (
    Attr("hidden_size", "int", doc="features of the hidden state, per direction", positive=True),
    Attr("num_layers", "int", 1, "recurrent layers stacked, each reading the one below", minimum=1),
    Attr("bias", "bool", True, "learn the biases bias_ih and bias_hh"),
    Attr(
        "dropout",
        "float",
        0.0,
        "dropout on the outputs of every layer but the last, while training",
        minimum=0.0,
        maximum=1.0,
    ),
    Attr("bidirectional", "bool", False, "also run each layer backwards in time, concatenated"),
)


class Recurrent(OpDef):
    """What rnn, lstm and gru share; each sets its gates, its classes and its gate order."""

    family = "recurrent"
    module = True
    leading_output = True
    steps_in_time = True
    inputs: ClassVar[tuple[str, ...]] = ("x", "h0?")
    attrs: ClassVar[tuple[Attr, ...]] = COMMON
    gates: ClassVar[int] = 1  # weight blocks stacked in each matrix: 4 for lstm, 3 for gru
    states: ClassVar[tuple[str, ...]] = ("h0",)  # the initial (and final) states
    torch_class: ClassVar[str]
    onnx_op: ClassVar[str]
    # ONNX's gates as indices into PyTorch's: LSTM i,o,f,c from PyTorch's i,f,g,o.
    onnx_order: ClassVar[tuple[int, ...]] = (0,)

    def resolve(self, ins, a):
        if a["dropout"] > 0 and a["num_layers"] == 1:
            raise SpecError(
                f"{self.name}: dropout={a['dropout']} acts between stacked layers, and there is "
                "one layer (PyTorch only warns that it does nothing)",
                hint=f"stack layers with num_layers=, or follow the {self.name} with dropout(p)",
            )
        return a

    def positions(self, node, flow):
        if any(flow.along(v) for v in node.inputs):
            flow.refuse(node, "it steps along the sequence, carrying a state no cache keeps")
        return flow.undeclared(node)

    def infer(self, ins, a):
        x = ins[0]
        expect_f32(self.name, x)
        if x.rank != 3 or not isinstance(x.shape[2], int):
            raise SpecError(
                f"{self.name} expects a batch-first sequence (N, T, features) with the features "
                f"known, got {x}",
                hint="an (N, features) input is one step: unsqueeze(1) makes it a sequence",
            )
        state = x.with_shape((self.depth(a), x.shape[0], a["hidden_size"]))
        given = ins[1:]
        if given and len(given) != len(self.states):
            raise SpecError(
                f"{self.name} takes its initial states {' and '.join(self.states)} together, "
                f"got {self.states[0]} alone",
                hint=f"give both: {self.name}(..., h0=h0, c0=c0)",
            )
        for name, t in zip(self.states, given, strict=False):
            if t != state:
                raise SpecError(
                    f"{self.name}: the initial state {name} must be {state} (layers * directions, "
                    f"N, hidden_size), got {t}"
                )
        directions = 2 if a["bidirectional"] else 1
        seq = x.with_shape((*x.shape[:2], directions * a["hidden_size"]))
        return [seq, *[state] * len(self.states)]

    def depth(self, a) -> int:
        return a["num_layers"] * (2 if a["bidirectional"] else 1)

    def params(self, ins, a):
        """Named, shaped, ordered and initialized as in torch.nn.LSTM's state_dict: per layer and
        direction weight_ih, weight_hh, bias_ih, bias_hh, all U(-1/sqrt(hidden), ...)."""
        h, g = a["hidden_size"], self.gates * a["hidden_size"]
        init = Init("uniform_fan_in", fan_in=h)
        out = {}
        for layer, suffix in self.layers(a):
            n_in = ins[0].shape[2] if layer == 0 else self.width(a)
            out[f"weight_ih_{suffix}"] = ParamSpec((g, n_in), init)
            out[f"weight_hh_{suffix}"] = ParamSpec((g, h), init)
            if a["bias"]:
                out[f"bias_ih_{suffix}"] = ParamSpec((g,), init)
                out[f"bias_hh_{suffix}"] = ParamSpec((g,), init)
        return out

    def layers(self, a) -> list[tuple[int, str]]:
        """(layer, parameter suffix) in state_dict order: l0, l0_reverse, l1, ..."""
        ends = ("", "_reverse") if a["bidirectional"] else ("",)
        return [(n, f"l{n}{end}") for n in range(a["num_layers"]) for end in ends]

    def width(self, a) -> int:
        return (2 if a["bidirectional"] else 1) * a["hidden_size"]

    def macs(self, node):
        """Per time step, each layer and direction multiplies its input and its state."""
        per_step = sum(int(np.prod(p.shape)) for k, p in node.params.items() if "weight" in k)
        return dim_mul(node.inputs[0].type.shape[1], per_step)

    # ---- PyTorch
    def torch_module(self, node):
        kwargs = {"num_layers": attr(node, "num_layers", default=1)}
        if "nonlinearity" in node.attrs:
            kwargs["nonlinearity"] = attr(node, "nonlinearity", default="tanh")
        return ctor(
            self.torch_class,
            dim(node, 0, 2),
            attr(node, "hidden_size"),
            **kwargs,
            bias=attr(node, "bias", default=True),
            batch_first=lit(True),
            dropout=attr(node, "dropout", default=0.0),
            bidirectional=attr(node, "bidirectional", default=False),
        )

    def torch_call(self, node, args, module):
        if len(args) == 1:
            return f"{module}({args[0]})"
        states = args[1] if len(args) == 2 else f"({', '.join(args[1:])})"
        return f"{module}({args[0]}, {states})"

    def torch_targets(self, names: list[str]) -> str:
        """nn.LSTM returns (output, (h_n, c_n)); nn.GRU and nn.RNN (output, h_n)."""
        if len(names) == 2:
            return ", ".join(names)
        if names[1:] == ["_", "_"]:
            return f"{names[0]}, _"
        return f"{names[0]}, ({', '.join(names[1:])})"

    # ---- ONNX
    def onnx(self, node, b, ins, outs):
        """(N, T, C) to time-major, one ONNX node per layer, the last layer's (T, D, N, H)
        back to (N, T, D * H); the layers' final states concatenated as PyTorch stacks them."""
        layers = node.attrs["num_layers"]
        x = b.add(node, "Transpose", [ins[0]], [b.temp(node, "time_major")], perm=[1, 0, 2])
        initial = [self.per_layer(node, b, s, i) for i, s in enumerate(ins[1:])]
        finals: list[list[str]] = [[] for _ in self.states]
        for layer in range(layers):
            states = [
                out if layers == 1 else b.temp(node, f"{s[0]}_n_l{layer}")
                for s, out in zip(self.states, outs[1:], strict=True)
            ]
            given = [s[layer] for s in initial]
            x = self.onnx_layer(node, b, layer, x, given, states, outs[0])
            for acc, state in zip(finals, states, strict=True):
                acc.append(state)
        if layers > 1:
            for out, parts in zip(outs[1:], finals, strict=True):
                b.add(node, "Concat", parts, [out], axis=0)

    def onnx_layer(self, node, b, layer, x, given, states, out) -> str:
        """One layer over the time-major x; its sequence, time-major for the next layer or
        batch-first (`out`) after the last."""
        a = node.attrs
        y = b.temp(node, f"y_l{layer}")
        inputs = [x, *self.onnx_weights(node, b, layer)]
        if given:  # after B (or "" without biases) and sequence_lens (""): the states
            inputs += [""] * (4 - len(inputs)) + ["", *given]
        b.add(node, self.onnx_op, inputs, [y, *states], **self.onnx_attrs(a))
        last = layer == a["num_layers"] - 1
        perm = [2, 0, 1, 3] if last else [0, 2, 1, 3]  # (N, T, D, H), or (T, N, D, H)
        y = b.add(node, "Transpose", [y], [b.temp(node, f"y_l{layer}_t")], perm=perm)
        shape = b.const(node, "merge_directions", [0, 0, self.width(a)], "i64")
        return b.add(node, "Reshape", [y, shape], [out if last else b.temp(node, f"x_l{layer}")])

    def onnx_attrs(self, a) -> dict:
        direction = "bidirectional" if a["bidirectional"] else "forward"
        return {"hidden_size": a["hidden_size"], "direction": direction}

    def per_layer(self, node, b, state: str, index: int) -> list[str]:
        """An initial state (layers * directions, N, H) cut into each layer's (directions, N, H)."""
        layers, per = node.attrs["num_layers"], self.depth(node.attrs) // node.attrs["num_layers"]
        if layers == 1:
            return [state]
        name = self.states[index]
        parts = [b.temp(node, f"{name}_l{n}") for n in range(layers)]
        b.add(node, "Split", [state, b.const(node, f"{name}_split", [per] * layers, "i64")], parts)
        return parts

    def onnx_weights(self, node, b, layer: int) -> list[str]:
        """W (D, G*H, C), R (D, G*H, H) and B (D, 2*G*H) of one layer, gates in ONNX's order,
        directions stacked: initializers computed here from the state_dict's tensors."""
        ends = [s for n, s in self.layers(node.attrs) if n == layer]

        def stacked(key: str) -> np.ndarray:
            return np.stack([self.reorder(b.weight(node, f"{key}_{s}")) for s in ends])

        made = [
            b.const(node, f"W_l{layer}", stacked("weight_ih"), "f32"),
            b.const(node, f"R_l{layer}", stacked("weight_hh"), "f32"),
        ]
        if node.attrs["bias"]:
            both = np.concatenate([stacked("bias_ih"), stacked("bias_hh")], axis=1)
            made.append(b.const(node, f"B_l{layer}", both, "f32"))
        return made

    def reorder(self, w: np.ndarray) -> np.ndarray:
        chunks = np.split(w, self.gates, axis=0)
        return np.concatenate([chunks[i] for i in self.onnx_order], axis=0)


@register
class Rnn(Recurrent):
    name = "rnn"
    prefix = "rnn"
    torch_class = "nn.RNN"
    onnx_op = "RNN"
    doc = (
        "Elman recurrent layers (torch.nn.RNN, batch_first): h_t = tanh(x_t W_ih^T + b_ih + "
        "h_(t-1) W_hh^T + b_hh). Input (N, T, C), optional initial state h0 (layers * "
        "directions, N, hidden_size); outputs the sequence (N, T, directions * hidden_size) "
        "and the final state h_n, shaped as h0: `seq, h = x -> rnn(32)`."
    )
    example = 'seq, h = x -> rnn(32, nonlinearity="relu")'
    attrs = (
        *COMMON[:2],
        Attr("nonlinearity", "str", "tanh", "the activation of each step", ("tanh", "relu")),
        *COMMON[2:],
    )

    def onnx_attrs(self, a):
        out = super().onnx_attrs(a)
        if a["nonlinearity"] == "relu":
            out["activations"] = ["Relu"] * (2 if a["bidirectional"] else 1)
        return out


@register
class Lstm(Recurrent):
    name = "lstm"
    prefix = "lstm"
    torch_class = "nn.LSTM"
    onnx_op = "LSTM"
    gates = 4
    states = ("h0", "c0")
    inputs = ("x", "h0?", "c0?")
    onnx_order = (0, 3, 1, 2)  # PyTorch's gates are i, f, g, o; ONNX's i, o, f, c
    doc = (
        "Long short-term memory layers (torch.nn.LSTM, batch_first), gates i, f, g, o stacked "
        "in each weight as in PyTorch. Input (N, T, C), optional initial states h0 and c0 "
        "(layers * directions, N, hidden_size), given together; outputs the sequence (N, T, "
        "directions * hidden_size) and the final states h_n and c_n, shaped as h0: "
        "`seq, h, c = x -> lstm(64)`."
    )
    example = "seq, h, c = x -> lstm(64, num_layers=2, dropout=0.1)"


@register
class Gru(Recurrent):
    name = "gru"
    prefix = "gru"
    torch_class = "nn.GRU"
    onnx_op = "GRU"
    gates = 3
    onnx_order = (1, 0, 2)  # PyTorch's gates are r, z, n; ONNX's z, r, h
    doc = (
        "Gated recurrent unit layers (torch.nn.GRU, batch_first), gates r, z, n stacked in "
        "each weight as in PyTorch, the reset gate applied after the hidden state's linear "
        "map. Input (N, T, C), optional initial state h0 (layers * directions, N, "
        "hidden_size); outputs the sequence (N, T, directions * hidden_size) and the final "
        "state h_n, shaped as h0."
    )
    example = "seq, h = x -> gru(64, bidirectional=true)"

    def onnx_attrs(self, a):
        return {**super().onnx_attrs(a), "linear_before_reset": 1}  # PyTorch's GRU
