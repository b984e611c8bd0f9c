#!/usr/bin/env python3
"""Make a tiny random Llama model that real vLLM (CPU) can load and serve: make_tiny_model.py OUTDIR

No model can be downloaded on these machines, so the end-to-end tests serve this one. It is
random: it produces gibberish, and only proves that vLLM loads, serves and stops.

Runs inside vllm-orch/vllm-cpu (which has torch, transformers and tokenizers); see
scripts/build-images.sh model. Deterministic: same library versions -> same files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

VOCAB_SIZE = 512
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "vLLM serves large language models over an OpenAI-compatible HTTP API.",
    "vllm-orch runs vLLM servers as Docker containers described by a TOML file.",
    "Hello! How are you today? I am a tiny random model and I say nothing useful.",
    "User: What is the capital of France?\nAssistant: Paris is the capital of France.",
    "0123456789 + - * / = ( ) [ ] { } < > , . ; : ' \" ! ? @ # $ % ^ & _ ~",
    "Containers start, answer health checks, serve completions and stop cleanly on SIGTERM.",
    "Every instance has its own port, its own GPUs, its own log file and its own model name.",
    "Tiny models are fast to load; random weights make gibberish, which is fine for tests.",
]
# A plain role-tagged template: vLLM's /v1/chat/completions needs the tokenizer to have one.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def make_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    # ByteLevel: every byte is in the alphabet, so any prompt tokenizes (no unknown token needed).
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   chat_template=CHAT_TEMPLATE, model_max_length=512)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    tokenizer = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        # head_dim = hidden_size / num_attention_heads = 64: vLLM's CPU attention refuses
        # smaller heads ("Unsupported CPU attention configuration").
        hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    print(f"tiny Llama written to {out} (vocab {len(tokenizer)}, "
          f"{sum(p.numel() for p in model.parameters())} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
