"""Qwen3.5 (Gated DeltaNet + gated attention) against HF transformers on tiny random checkpoints: logits, hidden
states and greedy generation; the decode state against the full forward; both delta-rule forms against HF's
reference kernels; latent rollout, training and answering with a Qwen3.5 agent; the paper's sizes by shape."""

import functools
import glob
import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rmas_jax.generation.sampler import Interrupt, bucket, generate_text, left_pad
from rmas_jax.latent.rollout import latent_rollout
from rmas_jax.links.recursive_link import inner_link
from rmas_jax.models.gated_deltanet import chunked_gated_delta_rule, l2_normalize, recurrent_gated_delta_rule
from rmas_jax.models.qwen3_5 import Qwen3_5CausalLM, Qwen3_5Config
from rmas_jax.weights.build import abstract_model
from rmas_jax.weights.hf_checkpoint import load_hf_model
from rmas_jax.weights.hf_config import arch_from_hf
from rmas_jax.weights.pretrained import resolve
from tiny_models import VOCAB, hf_forward, jitted, left_padded_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

L, F = "linear_attention", "full_attention"
# Every feature switched away from its trivial value: grouped value heads (2 key heads, 4 value heads), key and
# value head dims that differ, half-rotary heads, untied head; the pattern repeats so the scanned layout has 2 cycles.
TINY = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, linear_conv_kernel_dim=4, linear_key_head_dim=8,
            linear_value_head_dim=12, linear_num_key_heads=2, linear_num_value_heads=4, max_position_embeddings=256,
            layer_types=[L, F, L, F], tie_word_embeddings=False,
            rope_parameters=dict(rope_type="default", rope_theta=10_000.0, partial_rotary_factor=0.5))  # fmt: skip
# The other switches: the 3:1 default cycle, attention biases, a tied head, a 3-tap convolution, quarter rotary.
TINY_TIED = dict(TINY, layer_types=None, tie_word_embeddings=True, attention_bias=True, linear_conv_kernel_dim=3,
                 linear_num_value_heads=2, rope_parameters=dict(rope_type="default", rope_theta=1e6))  # fmt: skip


def perturb(model, seed: int):
  """Random weights of a useful size everywhere: zero-centred norms off zero, decays spread out."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("linear_attn.norm.weight"):  # the gated norm multiplies by w, not 1 + w
        p.copy_(0.5 + 0.5 * torch.rand_like(p))
      elif "norm" in name:
        p.copy_(0.5 * torch.rand_like(p))
      elif name.endswith(("A_log", "dt_bias")) or name.endswith("bias"):
        p.copy_(0.5 * torch.randn_like(p))
      elif "conv1d" in name:
        p.copy_(0.3 * torch.randn_like(p))
      else:
        p.copy_(0.08 * torch.randn_like(p))


def make_hf(config: dict, directory: str, seed: int = 0):
  cfg = transformers.Qwen3_5TextConfig(**config)
  model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
  perturb(model, seed)
  model.save_pretrained(directory)
  return model


@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("qwen3_5"))
  hf = make_hf(TINY, directory)
  hf.generation_config.eos_token_id = None  # generate the full length on both sides
  hf.generation_config.pad_token_id = 0
  return hf, directory


@pytest.fixture(scope="module", params=[False, True], ids=["loop", "scan"])
def ours(request, hf_tiny):
  """Our model loaded from the HF checkpoint, called through one jit (the same keyword interface)."""
  model = load_hf_model(hf_tiny[1], scan_layers=request.param)
  call = jitted(model)
  call.model, call.cfg, call.embed, call.init_cache = model, model.cfg, model.embed, model.init_cache
  return call


def assert_close_on(real, ours, ref):
  np.testing.assert_allclose(np.asarray(ours)[real], ref[real], rtol=1e-4, atol=1e-4)


def test_forward_matches_hf(hf_tiny, ours):
  """A left-padded batch whose longest row (70 tokens) spans two 64-token chunks, the second one padded."""
  assert isinstance(ours.model, Qwen3_5CausalLM) and ours.cfg.layer_types == (L, F, L, F)
  assert ours.cfg.period == 2 and ours.cfg.rotary_dim == 8
  assert sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(ours.model, nnx.Param))) == ours.cfg.num_params
  ids, mask = left_padded_batch(seed=1, lengths=(70, 41, 5))
  ref_logits, ref_hidden = hf_forward(hf_tiny[0], ids, mask)
  out = ours(jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask))
  real = mask.astype(bool)
  assert_close_on(real, out.hidden, ref_hidden)
  assert_close_on(real, out.logits, ref_logits)


def test_multimodal_hub_checkpoint_loads_its_text_tower(tmp_path):
  """Qwen's hub repositories are `Qwen3_5ForConditionalGeneration`: text tower under `model.language_model.`, a
  vision tower to skip, the head tied by the wrapper's flag. Its text config has the other switches: the default
  3:1 cycle, attention biases, a 3-tap convolution, equal key and value heads, quarter-rotary heads."""
  text = {k: v for k, v in TINY_TIED.items() if k != "tie_word_embeddings"}
  vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=64, patch_size=2,
                temporal_patch_size=1, spatial_merge_size=1, num_position_embeddings=16)  # fmt: skip
  cfg = transformers.Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=True)
  hf = transformers.Qwen3_5ForConditionalGeneration(cfg).eval()
  perturb(hf, 4)
  hf.save_pretrained(str(tmp_path))
  model = load_hf_model(str(tmp_path), scan_layers=False)
  assert model.lm_head is None and model.cfg.layer_types == (L, L, L, F) and model.cfg.rotary_dim == 4
  ids, mask = left_padded_batch(seed=3)
  with torch.no_grad():
    pos = torch.tensor(np.maximum(mask.cumsum(-1) - 1, 0))
    ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=pos).logits.numpy()
  out = jitted(model)(jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask))
  assert_close_on(mask.astype(bool), out.logits, ref)


def hf_greedy(hf, prompts, new):
  ids, mask = left_pad(prompts, max(map(len, prompts)))
  with torch.no_grad():
    ids, mask = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False)
  return out[:, ids.shape[1] :].numpy().tolist()


class CharTokenizer:
  """One character per id, so character cuts map to token cuts exactly."""

  def decode(self, ids, skip_special_tokens=True):
    return "".join(chr(0x100 + i) for i in ids)

  def __call__(self, text, add_special_tokens=False):
    return {"input_ids": [ord(c) - 0x100 for c in text]}


PROMPTS = [[5, 9, 17, 33, 2, 70, 11, 40, 3, 8], [44, 3, 99, 12], [7, 7, 1, 64, 90, 23, 5]]
NEW = 16


def decode_text(model, watcher=None):
  """The sampler's text loop over `PROMPTS` (both tests share its compiled shapes)."""
  ids, mask = left_pad(PROMPTS, bucket(max(map(len, PROMPTS))))
  return generate_text(model, CharTokenizer(), input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                       max_new_tokens=NEW, chunk=5, watcher=watcher, insert_room=16)  # fmt: skip


@pytest.fixture(scope="module")
def loop_model(hf_tiny):
  return load_hf_model(hf_tiny[1], scan_layers=False)


@pytest.fixture(scope="module")
def hf_plain(hf_tiny):
  return hf_greedy(hf_tiny[0], PROMPTS, NEW)


def test_greedy_generation_token_for_token(loop_model, hf_plain):
  """A left-padded batch decoded greedily (prefill, then decode steps in chunks) equals HF's `generate`."""
  assert [r.ids for r in decode_text(loop_model)] == hf_plain


def test_watcher_cut_and_insertion_rebuild_the_recurrent_state(hf_tiny, loop_model, hf_plain):
  """A watcher cuts row 0 inside a chunk and inserts text (a tool's result): the dropped tokens must leave the
  DeltaNet state too, so the rest equals greedy generation (HF's) from prompt + kept + inserted tokens; the other
  rows are never touched."""
  hf = hf_tiny[0]
  inserted, calls = [7, 8, 9, 10], []

  def watcher(i, text, cursor):
    if i == 0 and not calls:
      calls.append(text)
      return Interrupt(cut=3, insert=CharTokenizer().decode(inserted))
    return None

  out, plain = decode_text(loop_model, watcher), hf_plain
  assert len(calls[0]) == 5  # two generated tokens were dropped
  kept = plain[0][:3]
  assert out[0].ids == kept + hf_greedy(hf, [PROMPTS[0] + kept + inserted], NEW - 3)[0]
  assert out[0].inserted_tokens == 4 and [r.ids for r in out[1:]] == plain[1:]


def test_decode_state_steps_equal_full_forward(ours):
  """Fed one position at a time into a decode state (token embeddings, then latent-style vectors; padding and a
  hole in row 0 fed as masked steps), every output equals the full forward. A masked step leaves every state
  exactly as it was, so a hole is as if the token were absent."""
  model = ours
  rng = np.random.default_rng(4)
  ids, mask = left_padded_batch(seed=3, lengths=(8, 5))
  mask[0, 4] = 0  # a hole in the middle of row 0
  ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask)
  extra = jnp.asarray(rng.normal(size=(2, 4, model.cfg.hidden_size)), jnp.float32)
  embeds = jnp.concatenate([model.embed(ids), extra], axis=1)  # [2, 12, D]
  full_mask = jnp.concatenate([mask, jnp.ones((2, 4), mask.dtype)], axis=1)
  full = model(inputs_embeds=embeds, attention_mask=full_mask, return_logits=False)
  cache, hidden = model.init_cache(2, 16), []
  for t in range(embeds.shape[1]):
    out = model(inputs_embeds=embeds[:, t : t + 1], attention_mask=full_mask[:, t : t + 1], cache=cache,
                return_logits=False)  # fmt: skip
    if t == 4:  # row 0's hole: its states must not have moved
      for name in ("state", "conv"):
        np.testing.assert_array_equal(
          np.asarray(getattr(out.cache, name))[:, 0], np.asarray(getattr(cache, name))[:, 0]
        )
    cache = out.cache
    hidden.append(out.hidden)
  real = np.asarray(full_mask, bool)
  np.testing.assert_allclose(np.concatenate(hidden, 1)[real], np.asarray(full.hidden)[real], rtol=1e-5, atol=1e-5)
  assert int(cache.end) == 12 and np.asarray(cache.next_pos).tolist() == [11, 9]


def _delta_inputs(seed=0, b=2, t=37, hk=2, hv=4, dk=8, dv=12):
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
  q = l2_normalize(normal(b, t, hk, dk)) * dk**-0.5
  k = l2_normalize(normal(b, t, hk, dk))
  q, k = jnp.repeat(q, hv // hk, axis=2), jnp.repeat(k, hv // hk, axis=2)
  g, beta = -jnp.exp(normal(b, t, hv)), jax.nn.sigmoid(normal(b, t, hv))
  return q, k, normal(b, t, hv, dv), g, beta, normal(b, hv, dk, dv)


def test_both_delta_rule_forms_match_hf_reference_kernel():
  """Our chunked and recurrent forms against HF's token loop, from a non-zero state; and their gradients agree."""
  from transformers.models.qwen3_5.modeling_qwen3_5 import torch_recurrent_gated_delta_rule

  args = _delta_inputs()
  q, k, v, g, beta, state = map(lambda a: torch.tensor(np.asarray(a)), args)
  q = q * 8**0.5  # HF scales queries by dk^-1/2 itself
  ref_out, ref_state = torch_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=state, output_final_state=True)

  def loss(form, *args):
    out, final = form(*args)
    return jnp.sum(jnp.sin(out)) + jnp.sum(final**2), (out, final)

  grads = []
  for form in (recurrent_gated_delta_rule, functools.partial(chunked_gated_delta_rule, chunk=8)):
    (_, (out, final)), grad = jax.jit(jax.value_and_grad(functools.partial(loss, form), argnums=tuple(range(6)),
                                                         has_aux=True))(*args)  # fmt: skip
    np.testing.assert_allclose(np.asarray(out), ref_out.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(final), ref_state.numpy(), rtol=1e-4, atol=1e-4)
    grads.append(grad)
  for a, b in zip(*grads, strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-4)


def test_latent_rollout_equals_hf_rerun(hf_tiny, loop_model):
  """Latent steps through the decode state equal the release's way with HF's model: each step re-runs the whole
  growing sequence of input vectors and feeds back `R_in` of the last hidden state."""
  hf, model = hf_tiny[0], loop_model
  link = inner_link(model.cfg.hidden_size, rngs=nnx.Rngs(2))
  ids, mask = left_padded_batch(seed=4, lengths=(9, 6))
  embeds, steps = model.embed(jnp.asarray(ids, jnp.int32)), 3
  (mdef, mstate), (ldef, lstate) = nnx.split(model), nnx.split(link)
  feed = jax.jit(lambda lstate, h: nnx.merge(ldef, lstate)(h))

  @jax.jit
  def cached(mstate, lstate):
    m, lk = nnx.merge(mdef, mstate), nnx.merge(ldef, lstate)
    return latent_rollout(m, lk, embeds, jnp.asarray(mask), m.init_cache(2, embeds.shape[1] + steps), steps).hidden

  fast = np.asarray(cached(mstate, lstate))
  seq, m, states = torch.tensor(np.asarray(embeds)), torch.tensor(mask), []
  for _ in range(steps):
    with torch.no_grad():
      pos = (m.cumsum(-1) - 1).clamp(min=0)
      h = hf(inputs_embeds=seq, attention_mask=m, position_ids=pos, output_hidden_states=True).hidden_states[-1][:, -1]
    states.append(h.numpy())
    fed = torch.tensor(np.asarray(feed(lstate, jnp.asarray(h.numpy()))))[:, None]
    seq, m = torch.cat([seq, fed], 1), torch.cat([m, torch.ones_like(m[:, :1])], 1)
  np.testing.assert_allclose(fast, np.stack(states, 1), rtol=1e-4, atol=1e-4)


# Short role prompts keep the tiny byte-level prompts short.
SHORT_PROMPTS = dict(
  planner=dict(system="Be brief.", first="Plan: {question}", later="Plan: {question}\n{feedback}"),
  critic=dict(system="Be brief.", first="Check: {plan}\n{question}"),
  solver=dict(system="Be brief.", first="{refined_plan}\n{question}"),
)


def test_tiny_qwen3_5_solver_trains_and_answers():
  """`configs/tiny.py:qwen3_5`, a sequential system whose planner (thinking) and solver (writing) are tiny Qwen3.5s:
  the solver's inner objective and the outer objective are finite with non-zero gradients for the links they train
  (the outer one reaches the planner's links through the critic and the solver); then the solver answers from the
  round's final latents."""
  from rmas_jax.config_lib import load_config
  from rmas_jax.evaluation.datasets import Example
  from rmas_jax.patterns.from_config import load_system
  from rmas_jax.patterns.system import run_rounds
  from rmas_jax.training.batches import inner_batch, outer_batch
  from rmas_jax.training.objectives import answer_cross_entropy, inner_loss
  from rmas_jax.training.optimizer import split_links
  from rmas_jax.weights.tokenizer import stop_token_ids

  config = load_config("configs/tiny.py:qwen3_5")
  config.prompts = SHORT_PROMPTS
  loaded = load_system(config, progress=False)
  assert all(isinstance(loaded.system.agents[r].backbone, Qwen3_5CausalLM) for r in ("planner", "solver"))
  examples = [Example(id=f"t/{i}", question=f"What is {i} + 3?", answer=str(i + 3), task="math") for i in range(2)]
  graphdef, links, frozen = split_links(loaded.system)
  batch = inner_batch(loaded.tokenizers["solver"], examples, task="math", length=48, whole=False)
  ob = outer_batch(loaded.system, loaded.tokenizers, examples, rounds=1, steps=2, task="math", target_tokens=8,
                   min_prompt=16, book=loaded.prompts, whole=False)  # fmt: skip

  @jax.jit
  @functools.partial(jax.value_and_grad, has_aux=True)
  def losses(lk):
    system = nnx.merge(graphdef, lk, frozen)
    solver = system.agents["solver"]
    inner = inner_loss(solver.backbone, solver.inner, *batch)
    # The outer objective (`rollout_loss`), keeping the decoder's input to answer from.
    decoder_input = run_rounds(system, ob.first, ob.middle, ob.last, steps=2)
    outer = answer_cross_entropy(solver.backbone, decoder_input.embeds, decoder_input.mask, ob.target,
                                 ob.target_mask)  # fmt: skip
    return inner + outer, (inner, outer, decoder_input)

  (_, (inner, outer, decoder_input)), grads = losses(links)
  assert np.isfinite(float(inner)) and np.isfinite(float(outer))
  norm = lambda tree: sum(float(jnp.sum(jnp.abs(x))) for x in jax.tree.leaves(tree))  # noqa: E731
  assert norm(grads["agents"]["solver"]["inner"]) > 0
  assert norm(grads["outer"]["critic_to_solver"]) > 0 and norm(grads["outer"]["planner_to_critic"]) > 0
  assert norm(grads["agents"]["planner"]["inner"]) > 0  # through the planner's Qwen3.5 latent steps
  tok = loaded.tokenizers["solver"]
  answers = generate_text(loaded.system.agents["solver"].backbone, tok, inputs_embeds=decoder_input.embeds,
                          attention_mask=decoder_input.mask, max_new_tokens=6,
                          stop_ids=stop_token_ids(tok, chat=True))  # fmt: skip
  assert all(1 <= len(a.ids) <= 6 and a.finish in ("length", "stop_id") for a in answers)


# The Qwen3.5 sizes of the paper's presets, as their hub `config.json`s give them (the multimodal wrapper, text
# tower under `text_config`); the vision tower is not ours to build.
def _hub_config(hidden, layers, inter, heads, kv, value_heads, tie):
  text = dict(model_type="qwen3_5_text", hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inter,
              num_attention_heads=heads, num_key_value_heads=kv, head_dim=256, linear_num_key_heads=16,
              linear_num_value_heads=value_heads, linear_key_head_dim=128, linear_value_head_dim=128,
              linear_conv_kernel_dim=4, vocab_size=248320, full_attention_interval=4, rms_norm_eps=1e-6,
              rope_parameters=dict(rope_type="default", rope_theta=10_000_000, partial_rotary_factor=0.25,
                                   mrope_section=[11, 11, 10], mrope_interleaved=True))  # fmt: skip
  return dict(model_type="qwen3_5", architectures=["Qwen3_5ForConditionalGeneration"], tie_word_embeddings=tie,
              text_config=text)  # fmt: skip


FULL_SIZE = {
  "Qwen/Qwen3.5-2B": _hub_config(2048, 24, 6144, 8, 2, 16, tie=True),
  "Qwen/Qwen3.5-4B": _hub_config(2560, 32, 9216, 16, 4, 32, tie=True),
  "Qwen/Qwen3.5-9B": _hub_config(4096, 32, 12288, 16, 4, 32, tie=False),
}


def _preset_hub_ids() -> set[str]:
  ids = set()
  for path in glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "[!_b]*.py")):
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ids |= {model for agents in module.PRESETS.values() for _, model in agents if model.startswith("Qwen/Qwen3.5")}
  return ids


def test_every_qwen3_5_preset_resolves_to_this_module():
  ids = _preset_hub_ids()
  assert {"Qwen/Qwen3.5-2B", "Qwen/Qwen3.5-4B", "Qwen/Qwen3.5-9B"} <= ids <= set(FULL_SIZE)
  for hub_id in ids:
    assert resolve(hub_id) == ("hub", hub_id)
    assert isinstance(arch_from_hf(FULL_SIZE[hub_id]), Qwen3_5Config)


@pytest.mark.parametrize("hub_id", list(FULL_SIZE))
def test_full_size_shapes_and_parameter_count(hub_id):
  """`jax.eval_shape` of the full model (no memory; the scanned layout too for one size): its weights count the
  same as HF's model of the same config, built on torch's meta device."""
  config = FULL_SIZE[hub_id]
  cfg = arch_from_hf(config)
  assert cfg.num_layers % 4 == 0 and cfg.period == 4 and cfg.rotary_dim == 64
  counts = set()
  for scan in (False, True) if hub_id.endswith("2B") else (False,):
    model = abstract_model(cfg, dtype=jnp.bfloat16, scan_layers=scan)
    assert isinstance(model, Qwen3_5CausalLM)
    counts.add(sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
  text = {k: v for k, v in config["text_config"].items() if k != "model_type"}
  with torch.device("meta"):
    hf = transformers.Qwen3_5ForCausalLM(
      transformers.Qwen3_5TextConfig(**text, tie_word_embeddings=config["tie_word_embeddings"])
    )
  assert counts == {sum(p.numel() for p in hf.parameters())} == {cfg.num_params}
