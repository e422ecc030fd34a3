"""Checks of the PyTorch twin on its own (no engine): python3 python/test_mot.py

Each kind against a plain-loop transcription of its cpu/ header, and against
the identities that tie the kinds together: MoT with one-member groups is a
dense layer whose hidden units are the experts' side by side; token choice
that keeps every choice is a gated sum of all experts.
"""
import math
import os
import sys
import tempfile
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mot  # noqa: E402
from safetensors_io import read, write  # noqa: E402


def meta(kinds, **kw):
    m = {"format": "mot", "format_version": "1", "vocab_size": 11, "padded_vocab_size": 64, "max_seq_len": 8,
         "n_layer": len(kinds), "n_head": 2, "n_embd": 8, "dense_ffn_width": 16, "kinds": ",".join(kinds),
         "experts": 4, "group_size": 2, "expert_width": 6, "temperature": 0.7, "top_k": 2,
         "capacity_factor": 0.75, "router": "softmax", "router_temperature": 0.5, "activation": "gelu_tanh",
         "layernorm_eps": 1e-5, "tokenizer": "", "dtype": "f32"}
    m.update(kw)
    return {k: str(v) for k, v in m.items()}


def random_model(md, seed=0):
    torch.manual_seed(seed)
    model = mot.GPT(mot.Config(md)).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.uniform_(-0.5, 0.5)
            if "ln_" in name and name.endswith("weight"):
                p.add_(1)
    return model.eval()


def mot_loops(x, wc, w1, w2, G, tau, discrete=False):
    """cpu/mot.h mot_forward, loop for loop."""
    B, T, C = x.shape
    E, f = w1.shape[0], w1.shape[1]
    S = B // G
    out = torch.zeros_like(x)
    for k in range(S):
        for t in range(T):
            rows = [j * S + k for j in range(G)]
            X = torch.stack([x[b, t] for b in rows])  # (G,C)
            Z = X @ wc.t()
            M = torch.zeros(G, E, dtype=x.dtype)
            for e in range(E):
                M[:, e] = torch.softmax(Z[:, e] / tau, 0)
                if discrete:
                    best = 0
                    for j in range(1, G):
                        if Z[j, e] > Z[best, e]:
                            best = j
                    M[:, e] = 0
                    M[best, e] = 1
            U = M.t() @ X
            Y = torch.stack([mot.gelu(U[e] @ w1[e].t()) @ w2[e].t() for e in range(E)])
            O = M @ Y
            for j, b in enumerate(rows):
                out[b, t] = O[j]
    return out


def token_choice_loops(h, wc, bc, w1, w2, k, cap, router, rtau):
    """cpu/token_choice.h token_choice_route and _forward, loop for loop."""
    N, E = h.shape[0], wc.shape[0]
    z = h @ wc.t() + (bc if bc is not None else 0)
    out = torch.zeros_like(h)
    route = [[-1] * k for _ in range(N)]
    gates = torch.zeros(N, E, dtype=h.dtype)
    for n in range(N):
        if router == "softmax":
            gates[n] = torch.softmax(z[n], 0)
        elif router == "threshold":
            gates[n] = torch.sigmoid(z[n] / rtau)
        else:
            gates[n] = (z[n] >= 0).to(h.dtype)
        key = gates[n] if router == "softmax" else z[n]
        for r in range(k):
            best = -1
            for e in range(E):
                if e not in route[n][:r] and (best < 0 or key[e] > key[best]):
                    best = e
            if router != "softmax" and z[n, best] < 0:
                best = -1
            route[n][r] = best
    load = [0] * E
    for r in range(k):
        for n in range(N):
            e = route[n][r]
            if e >= 0 and load[e] < cap:
                load[e] += 1
                out[n] += gates[n, e] * (mot.gelu(h[n] @ w1[e].t()) @ w2[e].t())
    return out, load


class SafetensorsTest(unittest.TestCase):
    def test_round_trip(self):
        t = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int32), "c": torch.randn(2, 1, 4)}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "x.safetensors")
            write(path, t, {"k": "v"})
            back, md = read(path)
            self.assertEqual(md, {"k": "v"})
            for name in t:
                self.assertTrue(torch.equal(back[name], t[name]), name)
            write(path, t, dtype=torch.bfloat16)
            back, _ = read(path)
            self.assertTrue(torch.equal(back["a"], t["a"].to(torch.bfloat16).float()))
            self.assertEqual(back["b"].dtype, torch.int32)
            with open(path, "rb") as fp:
                n = int.from_bytes(fp.read(8), "little")
            self.assertEqual(n % 8, 0)


class MoTTest(unittest.TestCase):
    def layer(self, G, E=4, discrete=False):
        model = random_model(meta(["mot"], group_size=G, experts=E))
        return model.h[0].mot

    def test_matches_loops(self):
        for G, B in ((1, 3), (2, 6), (3, 6), (6, 6)):
            layer = self.layer(G)
            x = torch.randn(B, 5, 8, dtype=torch.float64)
            for discrete in (False, True):
                ref = mot_loops(x, layer.controller.weight, layer.w1, layer.w2, G, layer.tau, discrete)
                got = layer(x, {"discrete": discrete})
                self.assertLess((got - ref).abs().max().item(), 1e-12, (G, discrete))

    def test_one_member_groups_are_dense(self):
        layer = self.layer(1)
        E, f, C = layer.w1.shape
        dense = mot.Dense(mot.Config(meta(["dense"], dense_ffn_width=E * f))).double()
        with torch.no_grad():
            dense.c_fc.weight.copy_(layer.w1.reshape(E * f, C))
            dense.c_fc.bias.zero_()
            dense.c_proj.weight.copy_(layer.w2.permute(1, 0, 2).reshape(C, E * f))
            dense.c_proj.bias.zero_()
        x = torch.randn(3, 5, 8, dtype=torch.float64)
        self.assertLess((layer(x, {}) - dense(x, {})).abs().max().item(), 1e-12)

    def test_groups_are_rows_j_S_plus_k(self):
        G, B = 2, 6  # S = 3: groups {0,3}, {1,4}, {2,5}
        layer = self.layer(G)
        x = torch.randn(B, 4, 8, dtype=torch.float64)
        y = layer(x, {})
        x2 = x.clone()
        x2[3, 2] += 1  # row 3, position 2: only rows 0 and 3 at position 2 may change
        d = (layer(x2, {}) - y).abs().amax(dim=2)
        changed = (d > 0).nonzero().tolist()
        self.assertEqual(sorted(changed), [[0, 2], [3, 2]])


class TokenChoiceTest(unittest.TestCase):
    def check(self, router, k, cf, B=3, T=5, E=4, seed=0):
        model = random_model(meta(["token_choice"], router=router, top_k=k, capacity_factor=cf, experts=E), seed)
        layer = model.h[0].moe
        x = torch.randn(B, T, 8, dtype=torch.float64) * 2
        h = x.reshape(B * T, 8)
        cap = min(B * T, math.ceil(mot.f32(cf) * k * B * T / E))
        bc = layer.router.bias if router != "softmax" else None
        ref, load = token_choice_loops(h, layer.router.weight, bc, layer.w1, layer.w2, k, cap, router, layer.rtau)
        got = layer(x, {}).reshape(B * T, 8)
        self.assertLess((got - ref).abs().max().item(), 1e-12, (router, k, cf))
        return load, cap

    def test_matches_loops(self):
        dropped = 0
        for router in mot.ROUTERS:
            for k in (1, 2, 3):
                for cf in (0.5, 0.75, 1.25, 100):
                    for seed in range(3):
                        load, cap = self.check(router, k, cf, seed=seed)
                        dropped += any(n == cap for n in load) and cf < 1
        self.assertGreater(dropped, 0)  # the capacity did bind

    def test_keeping_every_choice_is_a_gated_sum(self):
        model = random_model(meta(["token_choice"], router="threshold-one", top_k=4, capacity_factor=10))
        layer = model.h[0].moe
        with torch.no_grad():
            layer.router.bias.fill_(100)  # every expert fires, gate 1
        x = torch.randn(2, 3, 8, dtype=torch.float64)
        want = sum(mot.gelu(x @ layer.w1[e].t()) @ layer.w2[e].t() for e in range(4))
        self.assertLess((layer(x, {}) - want).abs().max().item(), 1e-12)

    def test_decoding_drops_nothing(self):
        model = random_model(meta(["token_choice"], top_k=2, capacity_factor=0.25))
        layer = model.h[0].moe
        x = torch.randn(4, 4, 8, dtype=torch.float64)
        _, _, kept = layer.route(x.reshape(16, 8), decoding=False)
        self.assertFalse(bool(kept.all()))
        _, _, kept = layer.route(x.reshape(16, 8), decoding=True)
        self.assertTrue(bool(kept.all()))


class ModelTest(unittest.TestCase):
    def test_causal_and_vocab(self):
        for kinds in (["dense", "dense"], ["mot", "dense"], ["token_choice", "dense"]):
            model = random_model(meta(kinds))
            tok = torch.randint(0, 11, (4, 8))
            logits, loss = model(tok, tok, decoding=True)
            self.assertEqual(tuple(logits.shape), (4, 8, 11))
            tok2 = tok.clone()
            tok2[:, 5:] = (tok2[:, 5:] + 1) % 11
            logits2, _ = model(tok2, decoding=True)
            self.assertTrue(torch.equal(logits[:, :5], logits2[:, :5]), kinds)
            self.assertFalse(torch.equal(logits[:, 5:], logits2[:, 5:]), kinds)
            want = -logits.log_softmax(-1).gather(2, tok[:, :, None].long()).mean()
            self.assertLess(abs(loss.item() - want.item()), 1e-12)

    def test_file_round_trip_and_generate(self):
        md = meta(["dense", "mot", "token_choice"], router="threshold")
        model = random_model(md).float().double()  # the file holds f32
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.safetensors")
            write(path, model.state_dict(), md)
            back = mot.load(path)
            tok = torch.randint(0, 11, (2, 8))
            self.assertTrue(torch.equal(model(tok)[0], back(tok)[0]))
            del md["kinds"]
            write(path, model.state_dict(), md)
            with self.assertRaisesRegex(ValueError, "kinds"):
                mot.load(path)
        new = mot.generate(back, tok[:, :3], 10, temperature=0)
        self.assertEqual(tuple(new.shape), (2, 10))
        g = torch.Generator().manual_seed(1)
        self.assertEqual(tuple(mot.generate(back, tok[:, :3], 4, 1.0, g).shape), (2, 4))


if __name__ == "__main__":
    unittest.main()
