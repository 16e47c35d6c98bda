"""FLOPs: N_nonembedding by module type on tiny real transformers models, hand-computed."""

from __future__ import annotations

import pytest
import torch

from llem_pipeline.measure.flops import count_nonembedding_params, estimate_flops

V, D, FF, L = 100, 16, 32, 2


def tiny_llama(tied: bool, kv_heads: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=FF, num_hidden_layers=L,
                      num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=D // 4,
                      max_position_embeddings=64, tie_word_embeddings=tied)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def llama_expected(tied: bool, kv_heads: int) -> int:
    head_dim = D // 4
    attn = D * D + 2 * D * (kv_heads * head_dim) + D * D       # q, k, v (GQA-narrow), o; no biases
    mlp = 3 * D * FF                                           # gate, up, down (SwiGLU)
    norms = 2 * D                                              # input / post-attention RMSNorm
    n = L * (attn + mlp + norms) + D                           # + final norm
    return n if tied else n + V * D                            # untied lm_head counted once


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_llama_tied_untied_and_gqa(tied, kv_heads):
    model = tiny_llama(tied, kv_heads)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) is tied
    assert count_nonembedding_params(model) == llama_expected(tied, kv_heads)
    # sanity: everything but the embedding matrix
    assert count_nonembedding_params(model) == sum(p.numel() for p in model.parameters()) - V * D


def test_gpt2_embeddings_excluded_by_type_not_name():
    # the original tool filtered names containing "embed" and so counted GPT-2's wte/wpe
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=D, n_layer=L, n_head=4, n_positions=32))
    per_layer = 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + 2 * D + (D * 4 * D + 4 * D) + (4 * D * D + D)
    assert count_nonembedding_params(model) == L * per_layer + 2 * D    # + ln_f
    total = sum(p.numel() for p in model.parameters())
    assert total - count_nonembedding_params(model) == V * D + 32 * D  # wte + wpe


def test_storage_tied_head_and_plain_modules():
    emb = torch.nn.Embedding(10, 4)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = emb
            self.body = torch.nn.Linear(4, 4)               # 20
            self.head = torch.nn.Linear(4, 10, bias=False)
            # tied through a separate Parameter object over the same storage
            self.head.weight = torch.nn.Parameter(emb.weight.data)

    assert count_nonembedding_params(Net()) == 20
    assert count_nonembedding_params(torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.LayerNorm(5))) == 30


def test_packed_4bit_weights_use_their_logical_shape():
    class QuantState:
        shape = (8, 6)

    class Params4bit(torch.nn.Parameter):
        pass

    lin = torch.nn.Linear(6, 8, bias=False)
    packed = Params4bit(torch.zeros(24, 1, dtype=torch.uint8), requires_grad=False)  # 48 4-bit values in 24 bytes
    packed.quant_state = QuantState()
    lin.weight = packed
    assert count_nonembedding_params(lin) == 48


def test_estimate_flops_palm_formula():
    f = estimate_flops(1_000_000, input_tokens=300, output_tokens=700, precision="bf16")
    assert f.value == 2 * 1_000_000 * 1000
    assert (f.method, f.confidence, f.precision, f.tokens, f.n_params_nonembedding) == (
        "palm_formula", "medium", "bf16", 1000, 1_000_000)
    assert "tied lm_head" in f.notes and "Warmup tokens are excluded" in f.notes
    assert f.is_valid
    assert not estimate_flops(10, 0, 0, None).is_valid
    with pytest.raises(ValueError, match="output_tokens=-1"):
        estimate_flops(10, 1, -1, "fp16")
