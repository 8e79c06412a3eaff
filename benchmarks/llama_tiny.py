"""A tiny random-weight llama model for benchmarking a real ``llama-server`` (issue 13).

It writes a GGUF file with the ``gguf`` package (``pip install gguf``): the llama
architecture at toy size (2 blocks, 64-wide) with the tokenizer and chat template of the
vocabulary file that llama.cpp ships (``models/ggml-vocab-qwen2.gguf``, vendored in the
``llama-cpp-python`` sdist). The weights are random, so its answers are noise; what the
server does with the prompt (tokenize it, reuse its cache, evaluate the rest) is real.

    python benchmarks/llama_tiny.py VOCAB.gguf OUT.gguf
"""

from __future__ import annotations

import sys
from pathlib import Path

N_EMBD, N_HEAD, N_LAYER, N_FF, N_CTX = 64, 4, 2, 128, 16384


def _copy_tokenizer(reader: object, writer: object) -> int:
    """Copy the tokenizer.* fields; the vocabulary size."""
    import gguf

    assert isinstance(reader, gguf.GGUFReader) and isinstance(writer, gguf.GGUFWriter)
    n_vocab = 0
    for name, f in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        kind = f.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            sub = f.types[1]
            if sub == gguf.GGUFValueType.STRING:
                values: list[object] = [bytes(f.parts[i]).decode("utf-8", "surrogateescape") for i in f.data]
            else:
                values = [int(f.parts[i][0]) for i in f.data]
            writer.add_array(name, values)
            if name == "tokenizer.ggml.tokens":
                n_vocab = len(values)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(name, bytes(f.parts[f.data[0]]).decode("utf-8"))
        elif kind == gguf.GGUFValueType.UINT32:
            writer.add_uint32(name, int(f.parts[f.data[0]][0]))
        elif kind == gguf.GGUFValueType.BOOL:
            writer.add_bool(name, bool(f.parts[f.data[0]][0]))
    return n_vocab


def write_model(vocab: Path, out: Path, seed: int = 0) -> None:
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    reader = gguf.GGUFReader(str(vocab))
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("llmrepl-tiny-random")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    n_vocab = _copy_tokenizer(reader, writer)
    writer.add_vocab_size(n_vocab)

    def tensor(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    tensor("token_embd.weight", n_vocab, N_EMBD)
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    tensor("output.weight", n_vocab, N_EMBD)
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"blk.{i}.{part}.weight", N_EMBD, N_EMBD)
        tensor(f"blk.{i}.ffn_gate.weight", N_FF, N_EMBD)
        tensor(f"blk.{i}.ffn_up.weight", N_FF, N_EMBD)
        tensor(f"blk.{i}.ffn_down.weight", N_EMBD, N_FF)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    write_model(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"wrote {sys.argv[2]}")
