"""Thin code around transformers, which CI does not have: loading an HF
model directory and saving HF shards with the config and tokenizer files.
Everything that does not need transformers (the shard layout, the log-probs,
the optimiser) lives elsewhere and is tested with the built-in model."""

import os
import shutil

import torch

from . import stfile

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja", "generation_config.json")


class HFModel:
    """An AutoModelForCausalLM with the interface the worker uses: hidden(
    tokens, mask) -> (B, T, C) after the final norm, out_weight() (V, C),
    named_layout_params(), tokenize(text)."""

    def __init__(self, path, device, dtype, checkpointing):
        try:
            import transformers
        except ImportError as e:
            raise RuntimeError("loading an HF model directory needs the transformers package (%s)" % e)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ValueError("%s has no config.json: not an HF model directory" % path)
        self.path = path
        try:
            self.model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except TypeError:  # transformers < 4.56 names it torch_dtype
            self.model = transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype)
        self.model.to(device)
        if checkpointing:
            self.model.gradient_checkpointing_enable()
            self.model.config.use_cache = False
        try:
            self.tok = transformers.AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as e:  # a directory with weights and config only
            self.tok, self.tok_error = None, str(e)
        cfg = self.model.config
        self.vocab = self.model.get_output_embeddings().weight.shape[0]
        self.context = getattr(cfg, "max_position_embeddings", 1 << 30)
        self.names = [n for n, _ in self.model.named_parameters()]

    def named_layout_params(self):
        return list(self.model.named_parameters())

    def parameters(self):
        return self.model.parameters()

    def out_weight(self):
        return self.model.get_output_embeddings().weight

    def hidden(self, tokens, mask):
        out = self.model.base_model(input_ids=tokens, attention_mask=mask, use_cache=False)
        return out.last_hidden_state

    def tokenize(self, text, system=""):
        """The prompt as the chat template makes it (system message first
        when given, add_generation_prompt); without a template, the plain
        encoding of the system prompt and the text separated by a blank
        line."""
        if self.tok is None:
            raise ValueError("the model directory has no tokenizer (%s)" % self.tok_error)
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        if getattr(self.tok, "chat_template", None):
            ids = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return list(ids)
        return self.tok(system + "\n\n" + text if system else text)["input_ids"]

    def save(self, dir, full_state_dict=None, max_shard_bytes=5 << 30, master=False):
        """HF shards + index + config + tokenizer files (what vLLM and SGLang
        load). full_state_dict: name -> tensor (rank 0's gathered state under
        FSDP); default the model's own. master: keep the fp32 master weights
        (a checkpoint to resume from) instead of the model's own dtype."""
        sd = full_state_dict if full_state_dict is not None else self.model.state_dict()
        # The master weights are fp32; engines load the model's own dtype
        # (bf16 for the models this is for).
        want = getattr(self.model.config, "torch_dtype", None) or getattr(self.model.config, "dtype", None)
        cast = torch.bfloat16 if want in (torch.bfloat16, "bfloat16") and not master else None
        ts = []
        seen = set()
        for n, t in sd.items():
            ptr = t.data_ptr()
            if ptr in seen and getattr(self.model.config, "tie_word_embeddings", False) and n.endswith("lm_head.weight"):
                continue  # tied: the embedding holds it
            seen.add(ptr)
            t = t.detach().cpu().contiguous()
            if cast is not None and t.is_floating_point():
                t = t.to(cast)
            ts.append(tensor_entry(n, t))
        stfile.write_shards(dir, ts, max_shard_bytes)
        self.model.config.save_pretrained(dir)
        if getattr(self.model, "generation_config", None) is not None:
            self.model.generation_config.save_pretrained(dir)
        if self.tok is not None:
            self.tok.save_pretrained(dir)


def tensor_entry(name, t):
    """(name, dtype, shape, numpy array) of a CPU tensor for stfile."""
    if t.dtype == torch.bfloat16:
        return (name, "BF16", list(t.shape), t.view(torch.int16).numpy().view("<u2"))
    if t.dtype == torch.float16:
        return (name, "F16", list(t.shape), t.numpy())
    return (name, "F32", list(t.shape), t.float().numpy())


def copy_tokenizer_files(src, dst):
    for f in TOKENIZER_FILES:
        p = os.path.join(src, f)
        if os.path.isfile(p):
            shutil.copy(p, os.path.join(dst, f))
