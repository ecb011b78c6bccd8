"""NeMo AutoModel's own converter as the reference: every tensor of a d9dfs
tree made with mounts/nemo-automodel-combined.json or
mounts/nemo-automodel-lora.json equals, byte for byte, what
nemo_automodel's CombinedProjectionStateDictAdapter (version 0.3.0, the
last with adapter support for combined projections) makes from the same
state dict: from_hf for the forward tree, to_hf for the reversed one.

One deliberate difference, checked instead of skipped: for a checkpoint
whose config.json sets tie_word_embeddings, to_hf keeps lm_head.weight (the
embedding again) where d9dfs --reverse leaves it out, as Hugging Face saves
tied checkpoints; the script asserts the peer's lm_head.weight equals the
embedding and that the tree has none.

Needs torch and nemo_automodel (not the project venv): run it with the peer
venv's python. The adapter module is loaded by its path, without the
package's __init__ chain. Exits 77 with the reason when either is missing.

usage: check_nemo_peer.py from_hf HF_DIR TREE
       check_nemo_peer.py to_hf COMBINED_DIR TREE
       check_nemo_peer.py probe     (exit 0 when the peer imports, else 77)
"""
import glob
import importlib.util
import json
import os
import sys
import types


def import_peer():
    try:
        import torch  # noqa: F401
        spec = importlib.util.find_spec("nemo_automodel")
    except ImportError as e:
        print(f"skip: {e}")
        sys.exit(77)
    if spec is None or not spec.submodule_search_locations:
        print("skip: nemo_automodel is not installed (pip install --no-deps nemo-automodel==0.3.0)")
        sys.exit(77)
    path = os.path.join(list(spec.submodule_search_locations)[0], "components", "models",
                        "common", "combined_projection", "state_dict_adapter.py")
    if not os.path.exists(path):
        print(f"skip: {path} is missing (nemo_automodel other than 0.3.0?)")
        sys.exit(77)
    s = importlib.util.spec_from_file_location("nemo_combined_projection_adapter", path)
    mod = importlib.util.module_from_spec(s)
    s.loader.exec_module(mod)
    return mod.CombinedProjectionStateDictAdapter


def load(d):
    from safetensors.torch import load_file
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        for k, v in load_file(f).items():
            assert k not in out, f"{k} in two files"
            out[k] = v
    assert out, f"{d}: no tensors"
    return out


def same(a, b):
    import torch
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().view(-1).view(torch.uint8),
                       b.contiguous().view(-1).view(torch.uint8))


def main():
    Adapter = import_peer()
    if sys.argv[1:] == ["probe"]:
        return  # the peer imports
    mode, src, tree = sys.argv[1:4]
    cfg = types.SimpleNamespace(**json.load(open(os.path.join(src, "config.json"))))
    peer = Adapter(cfg)
    S, T = load(src), load(tree)
    want = peer.from_hf(dict(S)) if mode == "from_hf" else peer.to_hf(dict(S))
    bad = 0
    if mode == "to_hf" and getattr(cfg, "tie_word_embeddings", False) and "lm_head.weight" in want:
        emb = want.get("model.embed_tokens.weight")
        if emb is None or not same(want.pop("lm_head.weight"), emb) or "lm_head.weight" in T:
            print("lm_head.weight: the peer's is not the embedding, or the tree has one")
            bad += 1
    for name in sorted(set(want) | set(T)):
        if name not in T or name not in want:
            print(f"{name}: {'missing from the tree' if name not in T else 'not made by the peer'}")
            bad += 1
        elif not same(want[name], T[name]):
            print(f"{name}: differs from the peer's ({T[name].dtype} {tuple(T[name].shape)}, "
                  f"peer {want[name].dtype} {tuple(want[name].shape)})")
            bad += 1
    print(f"peer {mode}: {len(want)} tensors, {bad} wrong")
    sys.exit(1 if bad or not want else 0)


if __name__ == "__main__":
    main()
