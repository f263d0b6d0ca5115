"""Attention fusion speed (issue #11): the same graph with every level-2 pass but fuse_attention
("unfused") and with it too ("fused"), timed in one process in interleaved rounds.

  block:   torch's exported attention pattern alone, MatMul(Mul(Q, s), Mul(Transpose(K), s)) ->
           [Add(mask)] -> Softmax -> MatMul(., V), Q/K/V [batch, 12, 128, 64];
  encoder: a torch nn.TransformerEncoder of BERT-base's layer size (hidden 768, 12 heads, FFN
           3072, seq 128), exported with a static batch; onnxruntime's basic level folds its
           Shape-derived scales to constants first.

  model:   any ONNX file (--model PATH, e.g. build/bench-models/bert_base-opset17-v1.onnx once
           shape-value folding makes its scales constant), float32 inputs, dynamic dims = batch.

Reports the median and the best round per variant, wall clock (--threads, default all cores)
or process CPU time (--clock cpu, steadier on a busy machine with --threads 1).
  PYTHONPATH=build/h/python python bench/attention_fusion_bench.py [--what block encoder] [--batches 1 8]
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tqdm import tqdm

import pyflame_rt as rt


def block_model(path, batch, mask, heads=12, seq=128, head_size=64):
    s = np.array(head_size ** -0.25, np.float32)
    shape = [batch, heads, seq, head_size]
    nodes = [helper.make_node("Mul", ["q", "s"], ["qs"]), helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("Mul", ["kt", "s"], ["kts"]), helper.make_node("MatMul", ["qs", "kts"], ["scores"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in "qkv"]
    scores = "scores"
    if mask:
        nodes.append(helper.make_node("Add", ["scores", "mask"], ["masked"]))
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, 1, 1, seq]))
        scores = "masked"
    nodes += [helper.make_node("Softmax", [scores], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    graph = helper.make_graph(nodes, "attention", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              [numpy_helper.from_array(s, "s")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(shape).astype(np.float32) for n in "qkv"}
    if mask:
        feeds["mask"] = np.where(rng.random((batch, 1, 1, seq)) < 0.2, -1e4, 0).astype(np.float32)
    return path, feeds


def encoder_model(path, batch, layers):
    import onnxruntime as ort
    import torch

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(768, 12, 3072, dropout=0.0, activation="gelu", batch_first=True)
    model = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()
    torch.backends.mha.set_fastpath_enabled(False)  # its fused kernel has no ONNX export
    x = torch.randn(batch, 128, 768)
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    folded = path.with_suffix(".folded.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return folded, {"x": x.numpy()}


def model_feeds(path, batch):
    rng = np.random.default_rng(0)
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    return {i.name: rng.standard_normal([batch if d is None else d for d in i.shape]).astype(np.float32)
            for i in graph.inputs}


def optimized(path, with_attention):
    """The graph after every level-2 pass (fuse_attention only when asked), until nothing changes."""
    pm = rt.PassManager()
    names = [n for n in pm.list_passes() if pm.pass_level(n) <= 2 and (with_attention or n != "fuse_attention")]
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    for _ in range(4):
        if not any(r.changed for r in pm.run(graph, passes=names)):
            break
    return graph


def measure(label, path, feeds, args):
    opts = rt.SessionOptions()
    opts.optimization_level = 0  # the graphs come optimized
    opts.num_threads = args.threads
    graphs = {"unfused": optimized(path, False), "fused": optimized(path, True)}
    assert "FusedAttention" in [n.op_type for n in graphs["fused"].nodes], "fuse_attention did not fire"
    assert "FusedAttention" not in [n.op_type for n in graphs["unfused"].nodes]
    sessions = {k: rt.InferenceSession(g, opts) for k, g in graphs.items()}
    outs = {k: s.run(None, feeds)[0] for k, s in sessions.items()}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times = {k: [] for k in sessions}
    for _ in tqdm(range(args.rounds), desc=label, leave=False):
        for k, s in sessions.items():
            t0 = clock()
            for _ in range(args.runs):
                s.run(None, feeds)
            times[k].append((clock() - t0) / args.runs * 1e3)
    med = {k: float(np.median(v)) for k, v in times.items()}
    best = {k: float(np.min(v)) for k, v in times.items()}
    diff = float(np.abs(outs["fused"] - outs["unfused"]).max())
    print(f"{label}: unfused {med['unfused']:.2f} ms (best {best['unfused']:.2f}), fused {med['fused']:.2f} ms "
          f"(best {best['fused']:.2f}), speedup {med['unfused'] / med['fused']:.2f}x median, "
          f"{best['unfused'] / best['fused']:.2f}x best; max |fused - unfused| {diff:.1e}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", nargs="+", choices=["block", "encoder", "model"], default=["block", "encoder"])
    p.add_argument("--model", type=Path, help="the ONNX file --what model measures")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--layers", type=int, default=2, help="encoder layers")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--runs", type=int, default=10, help="runs per round")
    p.add_argument("--threads", type=int, default=0, help="SessionOptions.num_threads (0: all cores)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    clock = f"{args.clock} clock, {args.threads or 'all'} threads"
    for batch in args.batches:
        if "block" in args.what:
            for mask in (False, True):
                path, feeds = block_model(tmp / f"block{batch}{mask}.onnx", batch, mask)
                measure(f"attention block, batch {batch}{', key mask' if mask else ''} ({clock})", path, feeds, args)
        if "encoder" in args.what:
            path, feeds = encoder_model(tmp / f"encoder{batch}.onnx", batch, args.layers)
            measure(f"{args.layers}-layer encoder, batch {batch} ({clock})", path, feeds, args)
        if "model" in args.what:
            measure(f"{args.model.name}, batch {batch} ({clock})", args.model, model_feeds(args.model, batch), args)


if __name__ == "__main__":
    main()
