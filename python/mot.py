"""The engine's GPT in plain PyTorch: a third statement of the math of cpu/,
to be read next to it, and the way to use an exported model elsewhere.

    import mot
    model = mot.load("model.safetensors")              # float64 unless dtype= says otherwise
    logits, loss = model(tokens, targets)              # tokens, targets (B,T) int; logits (B,T,V)

The model (cpu/gpt.h): GPT-2 blocks, pre-LayerNorm, learned positions, the
LM head tied to wte.
    x = wte[tok] + wpe[pos]
    for each block: x = x + attn(ln_1(x));  x = x + ffn(ln_2(x))
    logits = ln_f(x) wte^T, the first V columns;  loss = mean cross-entropy
Each block's feed-forward layer is one of three kinds (common/ffn_kinds.h):
dense (cpu/ffn.h), Mixture of Tokens (cpu/mot.h), token choice (cpu/token_choice.h).

Tensor names are those of the file (`train_mot export`), so state_dict()
and the file hold the same keys; nn.Linear weights are (out, in).

MoT mixes the tokens of G batch rows at each position: its output for one
sequence depends on the other sequences of its group, so a MoT model always
runs on a batch of whole groups, B a multiple of G, and the rows belong to
groups exactly as in the engine (MoT.forward). Token choice fills each
expert up to a capacity over the B*T tokens of the batch, so which choices
are dropped depends on the batch too.
"""
import math
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

from safetensors_io import read

DENSE, MOT, TOKEN_CHOICE = "dense", "mot", "token_choice"
ROUTERS = ("softmax", "threshold", "threshold-one")


def f32(x):
    """x rounded to float, as the engine holds its configuration's numbers."""
    return struct.unpack("<f", struct.pack("<f", float(x)))[0]


class Config:
    """common/config.h, from an exported file's metadata."""

    def __init__(self, meta):
        def need(key):
            if key not in meta:
                raise ValueError(f"the model's metadata has no {key!r}")
            return meta[key]

        if meta.get("format") != "mot":
            raise ValueError(f"the metadata's format is {meta.get('format')!r}, not 'mot'")
        self.V = int(need("vocab_size"))              # logits beyond V never enter the softmax
        self.Vp = int(need("padded_vocab_size"))      # rows of wte
        self.maxT = int(need("max_seq_len"))          # rows of wpe
        self.L = int(need("n_layer"))
        self.NH = int(need("n_head"))
        self.C = int(need("n_embd"))
        self.kinds = need("kinds").split(",")         # (L) dense | mot | token_choice
        self.dff = int(meta.get("dense_ffn_width", 0))
        self.E = int(meta.get("experts", 0))
        self.G = int(meta.get("group_size", 1))
        self.f = int(meta.get("expert_width", 0))
        self.tau = f32(meta.get("temperature", 1))    # MoT softmax temperature
        self.topk = int(meta.get("top_k", 1))
        self.capacity = f32(meta.get("capacity_factor", 1.25))
        self.router = meta.get("router", "softmax")
        self.router_tau = f32(meta.get("router_temperature", 1))
        self.eps = float(meta.get("layernorm_eps", 1e-5))
        if len(self.kinds) != self.L:
            raise ValueError(f"the metadata lists {len(self.kinds)} layer kinds for {self.L} layers")
        for k in self.kinds:
            if k not in (DENSE, MOT, TOKEN_CHOICE):
                raise ValueError(f"unknown layer kind {k!r}")
        if self.router not in ROUTERS:
            raise ValueError(f"unknown router {self.router!r}")
        if meta.get("activation", "gelu_tanh") != "gelu_tanh":
            raise ValueError(f"unsupported activation {meta['activation']!r}")


def gelu(x):
    """cpu/gelu.h: the tanh approximation."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


class Attention(nn.Module):
    """cpu/attention.h: causal multi-head self-attention on packed q, k, v."""

    def __init__(self, cfg):
        super().__init__()
        self.NH = cfg.NH
        self.c_attn = nn.Linear(cfg.C, 3 * cfg.C)  # (3C, C) q, k, v
        self.c_proj = nn.Linear(cfg.C, cfg.C)

    def forward(self, x):  # x (B,T,C)
        B, T, C = x.shape
        hs = C // self.NH
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, hs).transpose(1, 2) for t in (q, k, v))  # (B,NH,T,hs)
        pre = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B,NH,T,T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = pre.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y)


class Dense(nn.Module):
    """cpu/ffn.h: out = gelu(x c_fc^T + b) c_proj^T + b."""

    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.C, cfg.dff)
        self.c_proj = nn.Linear(cfg.dff, cfg.C)

    def forward(self, x, mode):
        return self.c_proj(gelu(self.c_fc(x)))


class MoT(nn.Module):
    """cpu/mot.h: Mixture of Tokens over groups of G batch rows."""

    def __init__(self, cfg):
        super().__init__()
        self.G, self.tau = cfg.G, cfg.tau
        self.controller = nn.Linear(cfg.C, cfg.E, bias=False)       # wc (E,C)
        self.w1 = nn.Parameter(torch.zeros(cfg.E, cfg.f, cfg.C))     # (E,f,C)
        self.w2 = nn.Parameter(torch.zeros(cfg.E, cfg.C, cfg.f))     # (E,C,f)

    def forward(self, x, mode):  # x (B,T,C)
        B, T, C = x.shape
        if B % self.G:
            raise ValueError(f"a batch of {B} sequences is not a multiple of the group size {self.G}")
        S = B // self.G
        # group (k, t) holds rows b = j*S + k, j = 0..G-1, at position t:
        # viewed as (G,S,T,C), X[j,k,t] is row j*S + k
        X = x.view(self.G, S, T, C)
        Z = self.controller(X)                      # (G,S,T,E) controller logits
        M = (Z / self.tau).softmax(dim=0)           # over the G members of each group, per expert
        if mode.get("discrete"):                    # one-hot at the argmax over the group; ties: lowest j
            M = F.one_hot(Z.argmax(dim=0), self.G).movedim(-1, 0).to(x.dtype)
        U = torch.einsum("jkte,jktc->ktec", M, X)   # (S,T,E,C) merge: one mixed token per expert and group
        P = torch.einsum("ktec,efc->ktef", U, self.w1)   # (S,T,E,f)
        Y = torch.einsum("ktef,ecf->ktec", gelu(P), self.w2)  # (S,T,E,C)
        O = torch.einsum("jkte,ktec->jktc", M, Y)   # (G,S,T,C) emit: each token takes back its share
        return O.reshape(B, T, C)


class TokenChoice(nn.Module):
    """cpu/token_choice.h: Switch-style routing with a capacity per expert."""

    def __init__(self, cfg):
        super().__init__()
        self.E, self.k, self.cf = cfg.E, cfg.topk, cfg.capacity
        self.kind, self.rtau = cfg.router, cfg.router_tau
        self.router = nn.Linear(cfg.C, cfg.E, bias=cfg.router != "softmax")  # wc (E,C), bc (E)
        self.w1 = nn.Parameter(torch.zeros(cfg.E, cfg.f, cfg.C))  # (E,f,C)
        self.w2 = nn.Parameter(torch.zeros(cfg.E, cfg.C, cfg.f))  # (E,C,f)

    def capacity(self, N, decoding):
        """common/ffn_kinds.h: min(N, ceil(cf k N / E)); decoding drops nothing."""
        return N if decoding else min(N, math.ceil(self.cf * self.k * N / self.E))

    def route(self, h, decoding):
        """For the N tokens h (N,C) in order n = b*T + t: the gates (N,E),
        the expert of each choice (N,k) and whether it was dispatched (N,k)."""
        N, E, k = h.shape[0], self.E, self.k
        z = self.router(h)  # (N,E) router logits, + bc for the threshold routers
        if self.kind == "softmax":
            gates = z.softmax(dim=-1)
            key = gates
        elif self.kind == "threshold":
            gates, key = torch.sigmoid(z / self.rtau), z
        else:  # threshold-one
            gates, key = (z >= 0).to(h.dtype), z
        # the k largest keys in order; a stable sort sends ties to the lower index
        route = key.sort(dim=-1, descending=True, stable=True).indices[:, :k]  # (N,k)
        if self.kind != "softmax":  # expert e fires only when z_e >= 0 (its threshold is -bc_e)
            route = torch.where(z.gather(1, route) >= 0, route, torch.full_like(route, -1))
        # dispatch: rank r = 1..k in turn, within it the tokens in order n; an
        # expert takes a choice while it holds fewer than cap tokens
        cap = self.capacity(N, decoding)
        load = torch.zeros(E, dtype=torch.long, device=h.device)
        kept = torch.zeros(N, k, dtype=torch.bool, device=h.device)
        for r in range(k):
            e = route[:, r]
            chose = F.one_hot(e.clamp(min=0), E) * (e >= 0).long()[:, None]  # (N,E)
            before = load + chose.cumsum(dim=0) - chose  # (N,E) the row each choice would take
            kept[:, r] = (e >= 0) & ((before * chose).sum(dim=1) < cap)
            load = load + (chose * kept[:, r].long()[:, None]).sum(dim=0)
        return gates, route, kept

    def forward(self, x, mode):  # x (B,T,C)
        B, T, C = x.shape
        h = x.reshape(B * T, C)
        gates, route, kept = self.route(h, mode.get("decoding", False))
        out = torch.zeros_like(h)
        for e in range(self.E):  # each expert on the tokens it took; dropped choices add nothing
            n = ((route == e) & kept).any(dim=1).nonzero().squeeze(1)
            y = gelu(h[n] @ self.w1[e].t()) @ self.w2[e].t()
            out.index_add_(0, n, gates[n, e, None] * y)
        return out.view(B, T, C)


class Block(nn.Module):
    """cpu/block.h: x = x + attn(ln_1(x)); x = x + ffn(ln_2(x))."""

    def __init__(self, cfg, kind):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.C, eps=cfg.eps)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.C, eps=cfg.eps)
        self.kind = kind
        if kind == DENSE:
            self.mlp = Dense(cfg)
        elif kind == MOT:
            self.mot = MoT(cfg)
        else:
            self.moe = TokenChoice(cfg)

    def forward(self, x, mode):
        x = x + self.attn(self.ln_1(x))
        ffn = {DENSE: "mlp", MOT: "mot", TOKEN_CHOICE: "moe"}[self.kind]
        return x + getattr(self, ffn)(self.ln_2(x), mode)


class GPT(nn.Module):
    """cpu/gpt.h: gpt_forward."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Parameter(torch.zeros(cfg.Vp, cfg.C))   # (Vp,C) also the LM head
        self.wpe = nn.Parameter(torch.zeros(cfg.maxT, cfg.C))  # (maxT,C)
        self.h = nn.ModuleList(Block(cfg, kind) for kind in cfg.kinds)
        self.ln_f = nn.LayerNorm(cfg.C, eps=cfg.eps)

    def forward(self, tokens, targets=None, decoding=False, discrete=False):
        """tokens, targets (B,T) ints. Returns logits (B,T,V) and the mean
        cross-entropy (None without targets). decoding: token choice drops no
        choice (the engine's KV-cache decoding, one token per sequence at a
        time); discrete: MoT mixes with one-hot weights (--mot-discrete)."""
        cfg = self.cfg
        B, T = tokens.shape
        if T > cfg.maxT:
            raise ValueError(f"sequence length {T} is beyond the model's {cfg.maxT}")
        mode = {"decoding": decoding, "discrete": discrete}
        x = self.wte[tokens] + self.wpe[:T]
        for block in self.h:
            x = block(x, mode)
        logits = (self.ln_f(x) @ self.wte.t())[:, :, :cfg.V]  # the padded rows never enter the softmax
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(B * T, cfg.V), targets.reshape(B * T).long())
        return logits, loss


def load(path, dtype=torch.float64):
    """The model of an exported file (F32 or BF16), its weights in dtype."""
    tensors, meta = read(path)
    model = GPT(Config(meta))
    want = model.state_dict()
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing or extra:
        raise ValueError(f"{path}: tensors missing {missing}, unexpected {extra}")
    for name, t in want.items():
        if tuple(tensors[name].shape) != tuple(t.shape):
            raise ValueError(f"{path}: {name} has shape {list(tensors[name].shape)}, the metadata asks {list(t.shape)}")
    model.load_state_dict(tensors)
    model.meta = meta  # the file's metadata: the tokenizer's file name, the dtype
    return model.to(dtype).eval()


@torch.no_grad()
def generate(model, prompt, n_new, temperature=1.0, generator=None):
    """Continues each row of prompt (B,T0) by n_new tokens: greedy at
    temperature 0, else sampled from softmax(logits / temperature). Each step
    runs the whole window of the last maxT tokens (no KV cache; the engine's
    sample instead restarts from the last maxT/2 once maxT is filled) in
    decoding mode. A MoT model continues B sequences together, B a multiple of G: the
    group mixes them at every position, as the engine's sample does."""
    tokens = prompt.clone()
    for _ in range(n_new):
        logits, _ = model(tokens[:, -model.cfg.maxT:], decoding=True)
        last = logits[:, -1, :]
        if temperature == 0:
            nxt = last.argmax(dim=-1, keepdim=True)
        else:
            nxt = torch.multinomial((last / temperature).softmax(dim=-1).float(), 1, generator=generator)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens[:, prompt.shape[1]:]
