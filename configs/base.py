"""Defaults shared by every collaboration style. Style files start from `base_config()` and fill `agents`."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.style = ""
  c.seed = 0
  c.dtype = "float32"  # bfloat16 on GPU/TPU; XLA's CPU backend runs bf16 matmuls several times slower
  c.agents = []  # list of {"role": str, "model": registry name | .gguf path | HF directory | hub id | tiny:...}
  c.task = "math"  # the decoder's final instruction: math, choice, code or reasoning
  # A pattern declared here replaces the built-in one of `style`: {name, roles, edges: [{src, dst, slot,
  # feedback}], decoder}; prompts declared here replace the written ones: {role: {system, first, later}}.
  c.pattern = {}
  c.prompts = {}
  # `scale_to_embeddings`: scale every link's output to its receiver's mean token-embedding norm (official form;
  # its final LayerNorm alone gives norm sqrt(d), 7.5x SmolLM2's tokens and 58x Qwen2.5's).
  # `outer_init`: "torch" (the release: PyTorch's default init) or "identity" (ours; sender and receiver of the
  # same width: the residual map starts as the identity and the MLP's last layer at zero, so a fresh outer link
  # passes the sender's latents on as they are, normalised).
  c.links = ml_collections.ConfigDict(
    dict(form="official", design="res+2-layer", scale_to_embeddings=False, outer_init="torch")
  )
  # `prefix_reuse`: prefill each role's prompt opening (the same in every round) once per question, not every round.
  c.inference = ml_collections.ConfigDict(
    dict(rounds=2, latent_steps=16, num_samples=1, stop_strings=[], chunk=16, prefix_reuse=True)
  )
  # `ignore_eos`: stop ids are never chosen, every answer decodes exactly `max_new_tokens` (equal work when timing).
  c.generation = ml_collections.ConfigDict(
    dict(max_new_tokens=256, greedy=True, temperature=1.0, top_p=1.0, top_k=0, ignore_eos=False)
  )
  c.tools = ml_collections.ConfigDict(
    dict(enabled=False, names=["python", "search"], search_corpus="", max_calls=5, python_timeout_s=10.0,
         result_tokens=256)  # fmt: skip
  )
  # Link training (paper §4). The optimizer follows the release's recipe (lr 5e-4, cosine decay, AdamW beta
  # 0.9/0.95, no weight decay, clip 1.0) with the warm-up as a share of each stage (`warmup` < 1; >= 1 is a step
  # count); rounds and step counts are CPU-sized (the release trains 3 rounds, 20000 steps). Scanned layers keep the
  # outer step's program (all rounds, forward and backward) quick to compile. Answers are never cut: an example whose
  # prompts exceed `prompt_bucket` slots (latents included) or whose whole gold answer exceeds `target_tokens` is
  # left out. `target`: "gold" (worked solution, then the final line) or "final" (the final line alone).
  # `inner_prompts`: "role" (each role's own prompt and gold text, the release's inner loop) or "generic".
  # `mode`: `rollout` (eq. 6, latent rollouts in every round) or `teacher_forced` (the release: hidden states over
  # gold responses). `eval_every` > 0: every so many steps, the loss on held-out examples (`eval_path`, else the
  # last `eval_examples` of the training data, then never trained on) goes to metrics.jsonl, and the outer links
  # of the lowest held-out answer loss are kept in `checkpoints_best/` (`eval.checkpoint="best"`). `round_credit`:
  # each outer step also logs the gradient norm that reaches the links through each round (`round_grad_norms`).
  # `inner_objective`: "cosine" (eq. 5) or "contrastive" (ours: the gold token among all tokens, by cosine at
  # `inner_temperature`; see `training.objectives.inner_loss`). `max_skipped`: a step whose loss or gradient is not
  # finite is skipped; this many in a row stop the run with an error (0: never), so a run that cannot learn is not
  # reported finished.
  c.train = ml_collections.ConfigDict(
    dict(mode="rollout", dataset="gsm_symbolic", data_path="", fields={}, examples=2000, inner_steps=30,
         outer_steps=12, batch_size=2, inner_lr=5e-4, outer_lr=5e-4, warmup=0.05, b1=0.9, b2=0.95, weight_decay=0.0,
         clip=1.0, rounds=2, latent_steps=4, target="gold", target_tokens=256, inner_prompts="role",
         inner_tokens=512, prompt_bucket=256, checkpoint_every=5, keep=3, remat=True, scan_layers=True,
         eval_every=0, eval_examples=32, eval_path="", round_credit=True, inner_objective="cosine",
         inner_temperature=0.05, max_skipped=3)  # fmt: skip
  )
  # Evaluation (`eval.py`): dataset by name (gsm_symbolic, math500, gpqa_diamond, ...) or a local file in `path`.
  # `split`: "" is the dataset's own default (gsm_symbolic and dataset folders: test; a single file has none).
  # `fields`: record field -> our field for local files, e.g. {"question": "input[-1].content", "answer": "ideal"}.
  # `max_prompt_tokens`: a longer prompt is a skipped question (0: only the agents' contexts bound it).
  # `checkpoint`: which trained links, "latest" or "best". `warmup`: run the first batch once untimed, so seconds
  # per question leave compiling out.
  c.eval = ml_collections.ConfigDict(
    dict(dataset="gsm_symbolic", split="", path="", fields={}, limit=30, method="recursive_mas", rounds=0,
         latent_steps=0, num_samples=1, batch_size=4, scoring="strict", single_role="", agent_tokens=128,
         max_prompt_tokens=0, checkpoint="latest", warmup=False)  # fmt: skip
  )
  # Scale-out (`rmas_jax.sharding`): a (data, fsdp, tensor) device mesh; 1/1/1 is one device, -1 takes the devices
  # the other axes leave. `distributed`: auto (start multi-host JAX when JAX_COORDINATOR_ADDRESS or a launcher
  # says so), on (always, e.g. a TPU pod slice) or off; the coordinator fields override the environment.
  c.mesh = ml_collections.ConfigDict(
    dict(data=1, fsdp=1, tensor=1, distributed="auto", coordinator_address="", num_processes=0, process_id=-1)
  )
  return c


def style_config(style: str, presets: dict, preset: str | None, source: str) -> ml_collections.ConfigDict:
  """The config of `style` with the agents of `presets[preset or "default"]`, a list of (role, model)."""
  preset = preset or "default"
  if preset not in presets:
    raise ValueError(f"{source}: unknown preset {preset!r}; expected one of {sorted(presets)}")
  c = base_config()
  c.style = style
  c.preset = preset
  c.agents = [{"role": role, "model": model} for role, model in presets[preset]]
  return c
