"""Graph rewrites on the traced ONNX model: what only undoes itself is removed (``drop_round_trips``).

Each rewrite is checked the only way that matters: ``optimize.check_parity`` runs the final graph
beside PyTorch, and the export is refused if the logits differ.

Why a pass of our own rather than onnxscript's: on this graph onnxscript's optimizer
(``onnxscript.optimizer.optimize``) and its default rewrite rules (``onnxscript.rewriter.rewrite``)
remove none of these nodes (``python benchmarks/onnx_rewrites.py``; counts in
benchmarks/README.md). The reshapes are inverse only by the exporter's symbolic shape names, and
the transposes commute with onnxruntime's contrib ``SimplifiedLayerNormalization``, which no
onnxscript rule knows.
"""

from __future__ import annotations

import onnx


def value_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    """Each value's shape as the exporter recorded it, symbolic sizes by name (``s17``)."""
    g = model.graph
    return {
        v.name: tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim)
        for v in [*g.value_info, *g.input, *g.output]
        if v.type.tensor_type.HasField("shape")
    }


def drop_round_trips(model: onnx.ModelProto) -> int:
    """Remove what only undoes itself: a Reshape of a Reshape back to the first one's input shape
    (the view to heads and back around the fused attention), a Concat of a Split's outputs in
    order (the q, k, v split packed again), and a Transpose and its inverse around a norm over the
    last axis that both keep in place (QK-norm's heads-first layout and back). The exporter keeps
    them, with shapes it cannot prove equal at run time, and onnxruntime's optimizers leave them
    too; each is a node per layer per token. Returns how many values were replaced."""
    g = model.graph
    shapes = value_shapes(model)
    producer = {o: n for n in g.node for o in n.output}
    uses: dict[str, int] = {}
    for n in g.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1
    outputs = {o.name for o in g.output}
    same: dict[str, str] = {}  # value -> the earlier value it equals
    for n in g.node:  # in topological order, so a node's inputs are already resolved
        for i, name in enumerate(n.input):
            n.input[i] = same.get(name, name)
        if n.output[0] in outputs or not n.input:
            continue
        src = producer.get(n.input[0])
        if n.op_type == "Reshape" and src is not None and src.op_type == "Reshape":
            if shapes.get(src.input[0]) is not None and shapes.get(src.input[0]) == shapes.get(n.output[0]):
                same[n.output[0]] = src.input[0]
        elif n.op_type == "Concat" and src is not None and src.op_type == "Split":
            if list(n.input) == list(src.output) and _axis(n, shapes) == _axis(src, shapes):
                same[n.output[0]] = src.input[0]
        elif n.op_type == "Transpose" and src is not None and src.op_type == "SimplifiedLayerNormalization":
            pre = producer.get(src.input[0])
            if pre is None or pre.op_type != "Transpose" or uses.get(src.output[0]) != 1:
                continue
            perm, back = _perm(pre), _perm(n)
            last = len(perm) - 1
            if perm and back and perm[last] == last and _axis(src, shapes) == last:
                if [perm[i] for i in back] == list(range(len(perm))):
                    src.input[0] = pre.input[0]  # the norm now runs in the layout before both
                    same[n.output[0]] = src.output[0]
                    kept = [v for v in g.value_info if v.name != src.output[0]]  # its shape changed
                    del g.value_info[:]
                    g.value_info.extend(kept)
    live, needed = [], {o.name for o in g.output}
    for n in reversed(g.node):  # keep what the outputs still need
        if any(o in needed for o in n.output):
            live.append(n)
            needed.update(n.input)
    del g.node[:]
    g.node.extend(reversed(live))
    return len(same)


def _perm(node: onnx.NodeProto) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _axis(node: onnx.NodeProto, shapes: dict[str, tuple]) -> int | None:
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    rank = len(shapes.get(node.input[0], ()))
    return axis % rank if rank else None
