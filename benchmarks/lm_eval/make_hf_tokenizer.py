"""Build a Hugging Face tokenizer folder (tokenizer.json + tokenizer_config.json) from
a gpt2-type GGUF vocabulary, without torch, for lm_eval's tokenizer_backend=huggingface
(run.sh with TOKENIZER=OUTDIR) when the server has no /tokenize route.

Written for SmolLM2 (llama.cpp pre-tokenizer 'smollm': digits one by one, then the
GPT-2 byte-level regex); on SmolLM2-135M-Instruct it gives llama.cpp's token ids on
every string of capitals.jsonl and a set of digit/Unicode/whitespace/special-token cases.
Other pre-tokenizers need other settings: check against llama.cpp before trusting it.

Needs the packages gguf, tokenizers and transformers (no torch):
    python benchmarks/lm_eval/make_hf_tokenizer.py MODEL.gguf OUTDIR"""
import sys
from gguf import GGUFReader
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, AddedToken
from transformers import PreTrainedTokenizerFast

r = GGUFReader(sys.argv[1])
def strings(k):
    f = r.fields[k]; return [bytes(f.parts[i]).decode() for i in f.data]
def scalar(k):
    f = r.fields[k]; return int(f.parts[f.data[0]][0])
assert strings("tokenizer.ggml.model") == ["gpt2"], strings("tokenizer.ggml.model")
toks = strings("tokenizer.ggml.tokens")
merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
ttype = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(toks)}, merges=merges, fuse_unk=False))
tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
tk.decoder = decoders.ByteLevel()
special = [AddedToken(t, special=True, normalized=False) for t, ty in zip(toks, ttype) if ty == 3]  # CONTROL
tk.add_special_tokens(special)
bos, eos = toks[scalar("tokenizer.ggml.bos_token_id")], toks[scalar("tokenizer.ggml.eos_token_id")]
fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos)
fast.save_pretrained(sys.argv[2])
print("saved", sys.argv[2], "vocab", len(toks), "merges", len(merges), "special", len(special), "bos", bos, "eos", eos)
