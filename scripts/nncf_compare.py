"""Compare hybrid-tui's baked store with NNCF's data-free weight compression.

Builds an OpenVINO model from a Hugging Face test model's weights (f32,
widened from the checkpoint) whose dataflow has the same topological order as
a decoder (embedding Gather, per layer q/k/v/o/gate/up/down MatMuls, lm_head
MatMul last), runs `nncf.compress_weights` on it with the same options, and
checks every weight's integers, zero points and f16 scales against the baked
store, exactly. Exits non-zero on any difference.

usage: nncf_compare.py HF_DIR BAKED_DIR --mode int4_sym --group-size 128
           [--ratio R] [--backup int8_asym|int8_sym|none] [--all-layers]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import nncf
from safetensors.numpy import load_file


def load_hf(hf_dir: Path):
    idx = hf_dir / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(idx.read_text())["weight_map"].values()))
        if idx.exists()
        else ["model.safetensors"]
    )
    tensors = {}
    for f in files:
        # safetensors.numpy cannot read bf16: read raw and widen by hand.
        raw = (hf_dir / f).read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
        for name, info in header.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            buf = raw[8 + n + a : 8 + n + b]
            if info["dtype"] == "BF16":
                u = np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16
                arr = u.view(np.float32)
            elif info["dtype"] == "F16":
                arr = np.frombuffer(buf, dtype=np.float16).astype(np.float32)
            else:
                arr = np.frombuffer(buf, dtype=np.float32).copy()
            tensors[name] = arr.reshape(info["shape"])
    return tensors


def build_model(cfg, w):
    h = cfg["hidden_size"]
    ids = ops.parameter([1, 4], ov.Type.i64, name="input_ids")

    def const(name):
        c = ops.constant(w[name], dtype=ov.Type.f32, name=name)
        return c

    embed = const("model.embed_tokens.weight")
    x = ops.gather(embed, ids, 0)
    results = []

    def mm(inp, name):
        return ops.matmul(inp, const(name), False, True)

    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        q = mm(x, f"{p}.self_attn.q_proj.weight")
        k = mm(x, f"{p}.self_attn.k_proj.weight")
        v = mm(x, f"{p}.self_attn.v_proj.weight")
        results += [ops.result(k), ops.result(v)]
        o = mm(q, f"{p}.self_attn.o_proj.weight")
        x = ops.add(x, o)
        g = mm(x, f"{p}.mlp.gate_proj.weight")
        u = mm(x, f"{p}.mlp.up_proj.weight")
        d = mm(ops.multiply(ops.swish(g), u), f"{p}.mlp.down_proj.weight")
        x = ops.add(x, d)
    head_name = (
        "model.embed_tokens.weight" if cfg.get("tie_word_embeddings") else "lm_head.weight"
    )
    head = embed if cfg.get("tie_word_embeddings") else const(head_name)
    logits = ops.matmul(x, head, False, True)
    # Logits first, as exported decoders list them: NNCF treats the last
    # MatMul in its topological order (lm_head) as the "last layer".
    results.insert(0, ops.result(logits))
    return ov.Model(results, [ids], "nncf_compare")


def nncf_weights(model):
    """name -> dict(q=..., scale=..., zp=..., type=...) from the compressed model."""
    consts = {}
    for op in model.get_ops():
        if op.get_type_name() == "Constant":
            consts[op.get_friendly_name()] = op
    out = {}
    for name, op in consts.items():
        if "/" in name:
            continue
        et = op.get_element_type()
        if et in (ov.Type.f32, ov.Type.f16):
            continue
        entry = {"type": et.get_type_name(), "shape": list(op.get_shape())}
        entry["q"] = np.array(op.get_data())
        sc = consts.get(f"{name}/scale")
        if sc is not None:
            entry["scale"] = np.array(sc.get_data()).astype(np.float16)
        zp = consts.get(f"{name}/zero_point")
        if zp is not None:
            entry["zp"] = np.array(zp.get_data())
        out[name] = entry
    return out


def unpack_u4(packed, n, signed):
    b = np.frombuffer(packed.tobytes(), dtype=np.uint8)
    v = np.empty(b.size * 2, dtype=np.uint8)
    v[0::2] = b & 0x0F
    v[1::2] = b >> 4
    v = v[:n]
    if signed:
        return np.where(v >= 8, v.astype(np.int16) - 16, v).astype(np.int8)
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hf_dir", type=Path)
    ap.add_argument("baked_dir", type=Path)
    ap.add_argument("--mode", default="int4_sym")
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--ratio", type=float, default=1.0)
    ap.add_argument("--backup", default="int8_asym")
    ap.add_argument("--all-layers", action="store_true")
    a = ap.parse_args()

    cfg = json.loads((a.hf_dir / "config.json").read_text())
    w = load_hf(a.hf_dir)
    model = build_model(cfg, w)
    mode = getattr(nncf.CompressWeightsMode, a.mode.upper())
    kwargs = dict(mode=mode, all_layers=a.all_layers or None)
    if a.mode.startswith("int4"):
        kwargs.update(
            group_size=a.group_size,
            ratio=a.ratio,
            backup_mode=getattr(nncf.BackupMode, a.backup.upper()),
        )
    compressed = nncf.compress_weights(model, **kwargs)
    theirs = nncf_weights(compressed)

    manifest_text = (a.baked_dir / "manifest.toml").read_text()
    import tomllib

    manifest = tomllib.loads(manifest_text)
    files = {}
    checked = 0
    failures = []
    for name, entry in manifest["tensors"].items():
        shape = entry["shape"]
        if len(shape) != 2:
            continue
        scheme = entry["scheme"]
        t = theirs.get(name)
        if scheme in ("f16", "f32"):
            if t is not None:
                failures.append(f"{name}: ours {scheme}, NNCF {t['type']}")
            continue
        if t is None:
            failures.append(f"{name}: ours {scheme}, NNCF left it uncompressed")
            continue
        f = entry["file"]
        if f not in files:
            files[f] = load_file(str(a.baked_dir / f))
        st = files[f]
        rows, cols = shape
        n = rows * cols
        q = st[f"{name}.q"]
        if scheme.startswith("int4"):
            ours_q = unpack_u4(q, n, scheme == "int4_sym")
        else:
            ours_q = q.reshape(-1)
        their_type = t["type"]
        expect_type = {"int4_sym": "i4", "int4_asym": "u4", "int8_sym": "i8", "int8_asym": "u8"}[scheme]
        if their_type != expect_type:
            failures.append(f"{name}: ours {scheme}, NNCF {their_type}")
            continue
        tq = t["q"]
        if scheme.startswith("int4"):
            # Sub-byte constants come back packed, two values per byte.
            if tq.size < n:
                tq = unpack_u4(tq.view(np.uint8), n, scheme == "int4_sym")
        tq = tq.reshape(-1)[:n]
        diff_q = int(np.count_nonzero(ours_q.astype(np.int32) != tq.astype(np.int32)))
        ours_s = st[f"{name}.scale"].reshape(-1)
        their_s = t["scale"].reshape(-1)
        diff_s = int(np.count_nonzero(ours_s.view(np.uint16) != their_s.view(np.uint16)))
        diff_z = 0
        if "zp" in t:
            groups = ours_s.size
            zq = st[f"{name}.zp"]
            ours_z = unpack_u4(zq, groups, False) if scheme.startswith("int4") else zq.reshape(-1)
            tz = t["zp"].reshape(-1)
            if tz.size < groups:
                tz = unpack_u4(tz.view(np.uint8), groups, False)
            diff_z = int(np.count_nonzero(ours_z[:groups].astype(np.int32) != tz[:groups].astype(np.int32)))
        checked += 1
        if diff_q or diff_s or diff_z:
            failures.append(
                f"{name} ({scheme}): {diff_q}/{n} integers, {diff_s}/{ours_s.size} scales, {diff_z} zero points differ"
            )
    print(f"nncf-compare: {a.mode} group {a.group_size} ratio {a.ratio} backup {a.backup}"
          f"{' all-layers' if a.all_layers else ''}: {checked} weights compared")
    for f in failures:
        print("  DIFF", f)
    sys.exit(1 if failures or checked == 0 else 0)


if __name__ == "__main__":
    main()
