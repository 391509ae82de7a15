"""Weight loading: GGUF dequantization (checked against an independent block decoder),
GGUF and HF-directory models against the weights they were written from, synthetic seeds."""

from __future__ import annotations

import dataclasses

import gguf
import numpy as np
import pytest
import torch
from kernels_harness import SHAPES, run_mixed_batch
from kernels_model_files import GGUF_VOCAB, gguf_tensor_name, write_gguf, write_hf_dir

from ppd_kernels import load_model
from ppd_kernels.model import LlamaModel
from ppd_kernels.onednn_linear import packing_available
from ppd_kernels.packed_q4 import PackedQ4, Q4Blocks, packing_supported
from ppd_kernels.synthetic import synthetic_config, synthetic_weights
from ppd_kernels.weights_gguf import weights_from_gguf

Q = gguf.GGMLQuantizationType
GGUF_CONFIG = synthetic_config(vocab_size=GGUF_VOCAB)


def decode_blocks(raw: np.ndarray, qtype) -> np.ndarray:
    """ggml block formats, decoded from their C struct layout (32 values per block)."""
    rows = raw.reshape(raw.shape[0], -1)
    if qtype == Q.Q8_0:  # {f16 d; int8 q[32]}
        blocks = rows.reshape(rows.shape[0], -1, 34)
        d = blocks[..., :2].copy().view(np.float16).astype(np.float32)
        q = blocks[..., 2:].copy().view(np.int8).astype(np.float32)
        return (q * d).reshape(rows.shape[0], -1)
    if qtype == Q.Q4_1:  # {f16 d; f16 m; uint8 q[16]}: low nibbles = values 0..15, high = 16..31
        blocks = rows.reshape(rows.shape[0], -1, 20)
        d = blocks[..., 0:2].copy().view(np.float16).astype(np.float32)
        m = blocks[..., 2:4].copy().view(np.float16).astype(np.float32)
        nibbles = np.concatenate([blocks[..., 4:] & 0x0F, blocks[..., 4:] >> 4], axis=-1)
        return (nibbles.astype(np.float32) * d + m).reshape(rows.shape[0], -1)
    raise AssertionError(qtype)


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory):
    weights = synthetic_weights(GGUF_CONFIG, seed=11)
    directory = tmp_path_factory.mktemp("gguf")
    paths = {}
    for qtype in (Q.F32, Q.F16, Q.Q8_0, Q.Q4_1):
        paths[qtype] = directory / f"tiny-model.{qtype.name}.gguf"
        write_gguf(paths[qtype], GGUF_CONFIG, weights, qtype)
    return weights, paths


@pytest.mark.parametrize("qtype,max_step", [(Q.Q8_0, 1 / 127), (Q.Q4_1, 1 / 15)], ids=["Q8_0", "Q4_1"])
def test_dequantizer_matches_block_layout(gguf_files, qtype, max_step):
    original, paths = gguf_files
    reader = gguf.GGUFReader(str(paths[qtype]))
    loaded = weights_from_gguf(reader)
    quantized = [t for t in reader.tensors if t.tensor_type == qtype]
    assert len(quantized) == 1 + 7 * GGUF_CONFIG.num_layers  # embed + 7 matrices per layer
    for tensor in quantized:
        name = next(
            n
            for n in original
            if original[n].shape == loaded[n].shape
            and torch.equal(loaded[n], torch.from_numpy(decode_blocks(tensor.data, qtype)))
        )
        # error is at most half a quantization step of each 32-value block (+ f16 rounding of
        # the block scale/offset, < 1% of a step)
        blocks = original[name].reshape(-1, 32)
        step = (blocks.abs().amax(1) * 2 if qtype == Q.Q8_0 else blocks.amax(1) - blocks.amin(1)) * max_step
        error = (loaded[name].reshape(-1, 32) - blocks).abs().amax(1)
        assert torch.all(error <= step * 0.51 + 1e-4), name


def expected_weights(original, reader, qtype):
    if qtype == Q.F32:
        return original
    if qtype == Q.F16:
        return {n: w.half().float() if w.dim() == 2 else w for n, w in original.items()}
    decoded = {t.name: torch.from_numpy(decode_blocks(t.data, qtype)) for t in reader.tensors if t.tensor_type == qtype}
    return {n: decoded.get(gguf_tensor_name(n), w) for n, w in original.items()}


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.Q8_0, Q.Q4_1], ids=lambda q: q.name)
def test_gguf_model_matches_its_weights(gguf_files, qtype):
    original, paths = gguf_files
    lm = load_model(str(paths[qtype]), dtype=torch.float32)
    assert lm.config.rms_eps == pytest.approx(GGUF_CONFIG.rms_eps)  # stored as float32
    assert dataclasses.replace(lm.config, rms_eps=GGUF_CONFIG.rms_eps) == GGUF_CONFIG
    assert lm.name == "tiny-model"
    expected = LlamaModel(
        GGUF_CONFIG, expected_weights(original, gguf.GGUFReader(str(paths[qtype])), qtype), dtype=torch.float32
    )
    for (got, _), (want, _) in zip(
        run_mixed_batch(lm.model, SHAPES["ragged-mixed"], "pages", 4),
        run_mixed_batch(expected, SHAPES["ragged-mixed"], "pages", 4),
    ):
        assert (got - want).abs().max().item() < 1e-4 * max(1.0, want.abs().max().item())


def test_gguf_tokenizer(gguf_files):
    tokenizer = load_model(str(gguf_files[1][Q.F32]), dtype=torch.float32).tokenizer
    ids = tokenizer.encode("hello 12")
    assert ids == [256, ord("l"), ord("l"), ord("o"), ord(" "), ord("1"), ord("2")]  # "he" merged
    assert tokenizer.decode(ids) == "hello 12"
    assert tokenizer.bos_token_id == 258 and tokenizer.eos_token_ids == {259}
    assert tokenizer.special_tokens == {"<|endoftext|>": 257, "<|im_start|>": 258, "<|im_end|>": 259}
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    assert tokenizer.encode(prompt)[:1] == [258] and prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    "model_type,variant",
    [
        ("llama", {}),
        ("llama", dict(tie_word_embeddings=False)),
        ("qwen2", dict(attention_bias=True, tie_word_embeddings=False)),
    ],
    ids=["llama-tied", "llama-untied", "qwen2-bias"],
)
def test_hf_dir_matches_interleaved_original(tmp_path, model_type, variant):
    config = synthetic_config(**variant)
    weights = synthetic_weights(config, seed=9)
    write_hf_dir(tmp_path / "Tiny-HF", config, weights, model_type)
    lm = load_model(str(tmp_path / "Tiny-HF"), dtype=torch.float32)
    assert lm.name == "Tiny-HF"
    assert lm.config.rope_interleaved is False
    assert lm.config.attention_bias == (model_type == "qwen2")
    assert lm.config.tie_word_embeddings == config.tie_word_embeddings
    original = LlamaModel(config, weights, dtype=torch.float32)
    for (got, _), (want, _) in zip(
        run_mixed_batch(lm.model, SHAPES["ragged-mixed"], "shuffled", 2),
        run_mixed_batch(original, SHAPES["ragged-mixed"], "shuffled", 2),
    ):
        assert (got - want).abs().max().item() < 1e-4 * max(1.0, want.abs().max().item())
    assert lm.tokenizer.eos_token_ids == {256, 258}
    assert lm.tokenizer.bos_token_id == 257


def test_synthetic_models_are_seeded():
    a, b, c = (load_model(s, dtype=torch.float32) for s in ("synthetic:4", "synthetic:4", "synthetic:5"))
    assert torch.equal(a.model.embed, b.model.embed)
    assert not torch.equal(a.model.embed, c.model.embed)
    assert load_model("synthetic", dtype=torch.float32).name == "synthetic-0"


@pytest.mark.parametrize(
    "source,error,match",
    [
        ("synthetic:abc", ValueError, "seed"),
        ("/nonexistent/model.gguf", FileNotFoundError, "model.gguf"),
    ],
)
def test_bad_sources_name_the_problem(source, error, match):
    with pytest.raises(error, match=match):
        load_model(source)


def test_q4_blocks_unpack_matches_block_layout(gguf_files):
    reader = gguf.GGUFReader(str(gguf_files[1][Q.Q4_1]))
    for tensor in [t for t in reader.tensors if t.tensor_type == Q.Q4_1][:4]:
        blocks = Q4Blocks.from_gguf_bytes(tensor.data)
        rows, groups = blocks.scales.shape
        values = blocks.quants.view(rows, groups, 32) * blocks.scales[..., None] + blocks.mins[..., None]
        assert torch.equal(values.view(rows, -1), torch.from_numpy(decode_blocks(tensor.data, Q.Q4_1)))


@pytest.mark.skipif(not packing_supported("cpu", torch.bfloat16), reason="this torch has no CPU int4 GEMM")
def test_packed_q4_weights_serve_small_forwards(gguf_files, monkeypatch):
    original, paths = gguf_files
    lm = load_model(str(paths[Q.Q4_1]), dtype=torch.bfloat16)
    assert lm.model.layers[0].qkv_packed is not None
    assert lm.model.packed_max_rows == (8 if packing_available("cpu", torch.bfloat16) else 16)
    assert load_model(str(paths[Q.Q4_1]), dtype=torch.float32).model.layers[0].qkv_packed is None
    calls = []
    real_linear = PackedQ4.linear
    monkeypatch.setattr(PackedQ4, "linear", lambda self, x: calls.append(x.shape[0]) or real_linear(self, x))
    reader = gguf.GGUFReader(str(paths[Q.Q4_1]))
    reference = LlamaModel(GGUF_CONFIG, expected_weights(original, reader, Q.Q4_1), dtype=torch.float32)
    shape = SHAPES["ragged-mixed"]  # prefixes: one 42-token forward; mixed batch: 16 tokens
    for packed_rows in (16, 0):
        lm.model.packed_max_rows = packed_rows
        calls.clear()
        for (got, _), (want, _) in zip(
            run_mixed_batch(lm.model, shape, "pages", 4), run_mixed_batch(reference, shape, "pages", 4)
        ):
            assert torch.corrcoef(torch.stack([got, want]))[0, 1] > 0.999
            assert (got - want).abs().max().item() < 0.05 * want.abs().max().item()
        assert calls == ([16] * 4 * GGUF_CONFIG.num_layers if packed_rows else [])


@pytest.mark.parametrize(
    "source,expected",
    [
        ("synthetic", ("tiny", 0)),
        ("synthetic:5", ("tiny", 5)),
        ("synthetic:small", ("small", 0)),
        ("synthetic:llama-3.1-8b:2", ("llama-3.1-8b", 2)),
        ("model.gguf", None),
    ],
)
def test_synthetic_sources_name_a_shape_and_a_seed(source, expected):
    from ppd_kernels.synthetic import parse_synthetic

    assert parse_synthetic(source) == expected


@pytest.mark.parametrize("source", ["synthetic:nope", "synthetic:small:x", "synthetic:-1", "synthetic:a:1:2"])
def test_bad_synthetic_sources_name_the_problem(source):
    from ppd_kernels.synthetic import parse_synthetic

    with pytest.raises(ValueError, match="synthetic"):
        parse_synthetic(source)


def test_llama_8b_shape_is_the_real_architecture():
    from ppd_kernels.synthetic import SYNTHETIC_SHAPES

    cfg = SYNTHETIC_SHAPES["llama-3.1-8b"]
    assert (
        cfg.hidden_size,
        cfg.num_layers,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.intermediate_size,
        cfg.vocab_size,
    ) == (4096, 32, 32, 8, 14336, 128256)
    assert cfg.kv_bytes_per_token(torch.bfloat16) == 131072  # 128 KiB per token


def test_small_synthetic_shape_loads_and_decodes_out_of_vocab_ids():
    from ppd_kernels import load_model

    lm = load_model("synthetic:small:1", dtype=torch.float32)
    assert lm.name == "synthetic-small-1" and lm.config.num_layers == 4
    assert lm.tokenizer.decode([72, 3000, 105]) == "Hi"  # ids past the byte vocabulary decode to nothing
