"""A learned tensor standing on its own: a class token, a layer scale, a learned table. It has
a shape and an initializer, takes part in arithmetic with broadcasting (`x * scale`), and is
counted, saved and exported like any parameter: an nn.Parameter attribute in PyTorch (its
state_dict key is its name alone), an initializer in ONNX."""

from __future__ import annotations

from dataclasses import replace

from dslc.diagnostics import SpecError
from dslc.ir.graph import ParamSpec
from dslc.ir.types import TensorType
from dslc.ops.base import Attr, OpDef, register
from dslc.ops.init import Init, from_attr
from dslc.ops.pycode import TUPLE, Arg, Ctor

# Inits the tensor's constructor gives (as torchvision writes a class token or a layer scale),
# so the model's initialization has nothing left to do for them: the kind the parameter gets.
CONSTRUCTED = {"zeros": "torch_zeros", "ones": "torch_ones", "constant": "torch_full"}
FACTORIES = {"torch_zeros": "torch.zeros", "torch_ones": "torch.ones"}


@register
class Parameter(OpDef):
    name = "parameter"
    family = "learned"
    prefix = "param"
    doc = (
        "A learned tensor of `shape` (no batch dim unless written: broadcasting adds it), "
        "started by `init`. Assigned to a name (`gamma = parameter(...)`), it takes that name "
        "in the generated module and the state_dict."
    )
    example = "gamma = parameter([64, 1, 1], init=1e-6)"
    inputs = ()
    module = True
    named_by_target = True
    attrs = (
        Attr("shape", "ints", doc="its dims", positive=True),
        Attr("init", "init", "zeros", "a scheme, a number, or the values"),
        Attr("trainable", "bool", True, "false: fixed, never updated"),
    )

    def resolve(self, ins, a):
        shape = (a["shape"],) if isinstance(a["shape"], int) else tuple(a["shape"])
        return {**a, "shape": shape}

    def infer(self, ins, a):
        return TensorType("f32", a["shape"])

    def params(self, ins, a):
        if a["init"] == "default":
            raise SpecError("parameter: init has no default here; give a scheme or a number")
        init = from_attr(a["init"], Init("zeros"), vector=len(a["shape"]) < 2)
        if init.kind == "constant" and init.value in (0.0, 1.0):  # init=0 is zeros
            init = replace(init, kind="zeros" if init.value == 0.0 else "ones")
        if init.kind in CONSTRUCTED:
            init = replace(init, kind=CONSTRUCTED[init.kind])
        return {"": ParamSpec(a["shape"], init)}

    def torch_module(self, node):
        """nn.Parameter(torch.zeros(...)), torch.ones or torch.full; torch.empty where the
        model's initialization sets the values (a scheme, or values written in the spec)."""
        dims = tuple(Arg(d, "shape", item=i) for i, d in enumerate(node.attrs["shape"]))
        init = node.params[""].init
        if init.kind == "torch_full":
            tensor = Ctor("torch.full", (Arg(Ctor(TUPLE, dims)), Arg(init.value)))
        else:
            tensor = Ctor(FACTORIES.get(init.kind, "torch.empty"), dims)
        return Ctor("nn.Parameter", (Arg(tensor),))

    def torch_param(self, node, key):
        return "", key  # not a module: initialized on its own, never in a loop over modules

    def torch_call(self, node, args, module):
        return module

    def macs(self, node):
        return 0

    def onnx(self, node, b, ins, outs):
        """The initializer itself, under its state_dict key (the value may bear the same
        name, so the graph reads the initializer rather than a copy of it)."""
        b.alias(outs[0], b.param(node, ""))
