"""JAX reference step rate for a GPT training step at any shape (Strata's LM reproductions).

The model is the anchor W2 of ../shared/design/anchors/jax_lm.py (pre-LN GPT, learned positions, GELU,
causal softmax attention, fused qkv, 2-D linears, AdamW), with the shape and two options as flags, so the
reproductions can report their tokens/s beside JAX's at the same settings:

    python3 jax_lm_shapes.py --vocab 65 --d 128 --heads 4 --layers 4 --ctx 64 --batch 12 --tied --no-bias

nanoGPT's shakespeare_char baseline is the line above (exact GELU, AdamW lr 1e-3, betas 0.9/0.99, clip 1.0).
"""
import argparse
import os
import sys

sys.path.insert(0, os.environ.get("STRATA_ANCHORS", os.path.join(os.path.dirname(__file__), "../../../shared/design/anchors")))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from common import banner, median_time  # noqa: E402

ap = argparse.ArgumentParser()
for name, default in [("vocab", 256), ("d", 256), ("heads", 4), ("layers", 4), ("ctx", 128), ("batch", 16)]:
    ap.add_argument(f"--{name}", type=int, default=default)
ap.add_argument("--tied", action="store_true")
ap.add_argument("--no-bias", action="store_true")
a = ap.parse_args()
V, D, H, NL, T, B, F = a.vocab, a.d, a.heads, a.layers, a.ctx, a.batch, 4 * a.d
BIAS = not a.no_bias


def dense(key, fan_in, fan_out):
    p = {"w": jax.random.normal(key, (fan_in, fan_out)) * 0.02}
    if BIAS:
        p["b"] = jnp.zeros(fan_out)
    return p


def init(key):
    keys = iter(jax.random.split(key, 4 + 4 * NL))
    ln = lambda: {"g": jnp.ones(D), "b": jnp.zeros(D)} if BIAS else {"g": jnp.ones(D)}
    p = {
        "tok": jax.random.normal(next(keys), (V, D)) * 0.02,
        "pos": jax.random.normal(next(keys), (T, D)) * 0.02,
        "blocks": [{"ln1": ln(), "qkv": dense(next(keys), D, 3 * D), "proj": dense(next(keys), D, D),
                    "ln2": ln(), "fc": dense(next(keys), D, F), "out": dense(next(keys), F, D)}
                   for _ in range(NL)],
        "lnf": ln(),
    }
    if not a.tied:
        p["head"] = jax.random.normal(next(keys), (D, V)) * 0.02
    return p


def layernorm(p, x):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) * jax.lax.rsqrt(var + 1e-5) * p["g"]
    return y + p["b"] if "b" in p else y


def linear(p, x):
    y = x.reshape(-1, x.shape[-1]) @ p["w"]
    if "b" in p:
        y = y + p["b"]
    return y.reshape(*x.shape[:-1], -1)


def attention(p, x):
    b, t, _ = x.shape
    q, k, v = jnp.split(linear(p["qkv"], x), 3, axis=-1)
    heads = lambda z: z.reshape(b, t, H, D // H).transpose(0, 2, 1, 3)
    q, k, v = heads(q), heads(k), heads(v)
    att = (q @ k.transpose(0, 1, 3, 2)) / jnp.sqrt(D // H)
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    att = jax.nn.softmax(jnp.where(causal, att, -jnp.inf), axis=-1)
    return linear(p["proj"], (att @ v).transpose(0, 2, 1, 3).reshape(b, t, D))


def forward(params, tokens):
    x = params["tok"][tokens] + params["pos"][: tokens.shape[1]]
    for blk in params["blocks"]:
        x = x + attention(blk, layernorm(blk["ln1"], x))
        x = x + linear(blk["out"], jax.nn.gelu(linear(blk["fc"], layernorm(blk["ln2"], x)), approximate=False))
    head = params["tok"].T if a.tied else params["head"]
    return linear({"w": head}, layernorm(params["lnf"], x))


def loss_fn(params, inputs, targets):
    return optax.softmax_cross_entropy_with_integer_labels(forward(params, inputs), targets).mean()


banner(jax, optax)
params = init(jax.random.PRNGKey(0))
data = jax.random.randint(jax.random.PRNGKey(1), (B, T + 1), 0, V)
inputs, targets = data[:, :-1], data[:, 1:]
opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, b1=0.9, b2=0.99, weight_decay=0.1))
state = {"params": params, "opt": opt.init(params)}


@jax.jit
def train_step(params, opt_state, inputs, targets):
    loss, grads = jax.value_and_grad(loss_fn)(params, inputs, targets)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def one_step():
    p, o, loss = train_step(state["params"], state["opt"], inputs, targets)
    loss.block_until_ready()
    state.update(params=p, opt=o, loss=loss)


t = median_time(one_step, reps=30, warmup=3)
print(f"# shape V={V} D={D} H={H} L={NL} T={T} B={B} tied={a.tied} bias={BIAS}")
print(f"JAX LM train: {B * T / t:8.0f} tokens/s  ({t * 1e3:.2f} ms/step, {1 / t:.1f} steps/s)")
