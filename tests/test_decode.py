"""The static-shaped decode loop (model/decode.py): its tokens and generator states equal the eager
loop's and transformers' `generate`; on CUDA the captured graph equals both."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from torch.overrides import TorchFunctionMode

from r1omni_fast.model import decode

from r1omni_fast.prompts import build_instruction
from tests._model_fixtures import media, tiny_ckpt, tiny_model  # noqa: F401  (fixtures)

TEXTS = ["Which emotion is shown here?", "Say it", "The person seems sad because of a frown."]


def _text_batch(model, texts=TEXTS, device="cpu"):
    enc = model.processor.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def _ending_eos(model, batch, g, new, **kw):
    """Token ids the eager loop emits (in row r, the first at or after step 2 + 2 (r % 4) that no
    row starts with), so that every row ends before ``new`` tokens, rows at different steps."""
    first = model.generate(batch, num_generations=g, max_new_tokens=new, eos_token_id=[-1], **kw).completion_ids
    starts = set(first[:, 0].tolist())
    return sorted({next(t for t in row[2 + 2 * (r % 4):] if t not in starts) for r, row in enumerate(first.tolist())})


def _same(a, b):
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.lengths, b.lengths) and a.texts == b.texts


def _transformers_greedy(model, batch, new, eos, embeds=None, **kw):
    """transformers' greedy `generate` of each prompt alone (unpadded), as a list of token lists."""
    pad = model.processor.tokenizer.pad_token_id
    rows = []
    for row, valid in enumerate(batch["attention_mask"].bool()):
        if embeds is None:
            ids = batch["input_ids"][row][valid][None]
            out = model.llm.generate(input_ids=ids, max_new_tokens=new, do_sample=False, eos_token_id=eos,
                                     pad_token_id=pad, **kw)[0, ids.shape[1]:]
        else:
            out = model.llm.generate(inputs_embeds=embeds[row][valid][None], max_new_tokens=new, do_sample=False,
                                     eos_token_id=eos, pad_token_id=pad, **kw)[0]
        rows.append(out.tolist())
    return rows


def _rows(out, g):
    """Each prompt's first completion up to its end, as token lists."""
    return [out.completion_ids[r, :out.lengths[r]].tolist() for r in range(0, out.completion_ids.shape[0], g)]


# ------------------------------------------------------------------------------- CPU, eager step
def test_draw_is_torch_multinomial():
    """`draw` reproduces multinomial's tokens and leaves each generator in multinomial's state."""
    for seed, (rows, v, groups) in enumerate([(1, 5, 1), (6, 640, 3), (4, 151936, 1), (8, 17, 2)]):
        probs = torch.randn(rows, v, generator=torch.Generator().manual_seed(seed)).mul(3).softmax(-1)
        probs[:, ::3] = 0
        a = [torch.Generator().manual_seed(100 + i) for i in range(groups)]
        b = [torch.Generator().manual_seed(100 + i) for i in range(groups)]
        expected = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in
                              zip(probs.split(rows // groups), a)]).squeeze(-1)
        assert torch.equal(decode.draw(probs, b), expected)
        assert all(torch.equal(x.get_state(), y.get_state()) for x, y in zip(a, b))


@pytest.mark.parametrize("check_every", [1, 3, 8])
def test_static_greedy_equals_eager_loop_and_transformers(tiny_model, check_every):
    """Greedy with a repetition penalty (the random tiny LLM repeats its first token without one)."""
    batch = _text_batch(tiny_model)
    g, new = 2, 12
    eos = _ending_eos(tiny_model, batch, g, new, do_sample=False, repetition_penalty=3.0)
    common = dict(num_generations=g, max_new_tokens=new, do_sample=False, eos_token_id=eos, repetition_penalty=3.0)
    eager = tiny_model.generate(batch, **common)
    static = tiny_model.generate(batch, decode_loop="static", check_every=check_every, **common)
    _same(eager, static)
    assert len(set(eager.lengths.tolist())) > 1 and eager.lengths.max() < new  # rows end at different steps
    assert torch.equal(static.completion_ids[::g], static.completion_ids[1::g])
    assert _rows(static, g) == _transformers_greedy(tiny_model, batch, new, eos, repetition_penalty=3.0)


def test_static_greedy_with_media_equals_transformers(tiny_model):
    frames, mel = media(2, seed=3)
    batch = tiny_model.processor([build_instruction(), "<audio>\nAnd here, briefly?"],
                                 pixel_values=frames, audio_features=mel)
    new = 10
    eager = tiny_model.generate(batch, num_generations=2, max_new_tokens=new, do_sample=False)
    static = tiny_model.generate(batch, num_generations=2, max_new_tokens=new, do_sample=False, decode_loop="static")
    _same(eager, static)
    with torch.no_grad():
        embeds = tiny_model.embed(batch["input_ids"], pixel_values=batch["pixel_values"],
                                  audio_features=batch["audio_features"], bert_input_ids=batch["bert_input_ids"],
                                  bert_attention_mask=batch["bert_attention_mask"])
    assert _rows(static, 2) == _transformers_greedy(tiny_model, batch, new, tiny_model.processor.eos_token_ids,
                                                    embeds=embeds)


SETTINGS = [dict(temperature=1.5), dict(temperature=0.8, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=3.0)]


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("kind", ["one", "per-prompt", "default"])
def test_static_sampling_equals_eager_loop_with_generator_states(tiny_model, settings, kind):
    """Same generators -> same tokens, and the generators end where the eager loop leaves them,
    also when the end is found up to check_every - 1 steps late."""
    batch = _text_batch(tiny_model)
    g, new = 3, 14

    def generators(seed):
        if kind == "default":
            torch.manual_seed(seed)
            return None
        gens = [torch.Generator().manual_seed(seed + i) for i in range(len(TEXTS) if kind == "per-prompt" else 1)]
        return gens if kind == "per-prompt" else gens[0]

    def state(gen):
        if gen is None:
            return [torch.get_rng_state()]
        return [x.get_state() for x in (gen if isinstance(gen, list) else [gen])]

    eos = _ending_eos(tiny_model, batch, g, new, generator=generators(7), **settings)
    runs = {}
    for loop, check_every in (("eager", 1), ("static", 1), ("static", 4)):
        gen = generators(7)
        out = tiny_model.generate(batch, num_generations=g, max_new_tokens=new, eos_token_id=eos, generator=gen,
                                  decode_loop=loop, check_every=check_every, **settings)
        runs[loop, check_every] = (out, state(gen))
    eager, eager_state = runs["eager", 1]
    assert eager.lengths.max() < new and len(set(eager.lengths.tolist())) > 1
    for key in (("static", 1), ("static", 4)):
        out, end_state = runs[key]
        _same(eager, out)
        assert all(torch.equal(x, y) for x, y in zip(eager_state, end_state)), key


@pytest.mark.parametrize("g,share_prefix", [(1, True), (2, False)])
def test_static_equals_eager_loop_one_sample_and_duplicated_prompts(tiny_model, g, share_prefix):
    batch = _text_batch(tiny_model)
    common = dict(num_generations=g, max_new_tokens=10, temperature=1.2, top_k=50, share_prefix=share_prefix)
    gens = [[torch.Generator().manual_seed(i) for i in range(len(TEXTS))] for _ in range(2)]
    eos = _ending_eos(tiny_model, batch, g, 10, generator=[torch.Generator().manual_seed(i) for i in range(len(TEXTS))],
                      **{k: v for k, v in common.items() if k not in ("num_generations", "max_new_tokens")})
    eager = tiny_model.generate(batch, eos_token_id=eos, generator=gens[0], **common)
    static = tiny_model.generate(batch, eos_token_id=eos, generator=gens[1], decode_loop="static", check_every=3,
                                 **common)
    _same(eager, static)
    assert eager.lengths.max() < 10
    assert all(torch.equal(x.get_state(), y.get_state()) for x, y in zip(*gens))


def test_static_step_reads_nothing_back_to_the_host(tiny_model):
    """What a CUDA graph needs of the step: no value read back (`.item()`, `bool()`, data-dependent
    shapes). Greedy: the whole step under a fake-tensor mode (which has no values to read);
    sampling: under a mode that fails on every host-reading call."""
    cfg = tiny_model.llm.config

    def loop(sampling, generators):
        return decode.DecodeLoop(tiny_model.llm, rows=4, group=2, width=64, vocab=cfg.vocab_size,
                                 cache_dtype=torch.float32, device=torch.device("cpu"), sampling=sampling,
                                 generators=generators, eos=2, position_shape=(4, 1), capture=False)

    with FakeTensorMode(allow_non_fake_inputs=True):
        greedy = loop(decode.Sampling(False, 1.0, 0, 1.0, None, 1.3), 0)
        greedy.step()
        greedy.step()
        with pytest.raises(DataDependentOutputException):  # the mode does catch host reads
            bool(greedy.done.all())

    class NoHostReads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in {"item", "__bool__", "__int__", "__float__", "__index__", "tolist",
                                                 "numpy", "nonzero", "masked_select", "unique"}:
                raise RuntimeError(f"host read: {func.__name__}")
            return func(*args, **(kwargs or {}))

    sampled = loop(decode.Sampling(True, 0.8, 20, 0.9, 0.05, 1.3), 2)
    sampled.generators = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    with NoHostReads():
        sampled.step()
        sampled.step()
        with pytest.raises(RuntimeError, match="host read"):
            bool(sampled.done.all())


def test_decode_loop_argument_errors(tiny_model):
    batch = _text_batch(tiny_model)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        tiny_model.generate(batch, max_new_tokens=2, decode_loop="graph")
    with pytest.raises(ValueError, match="decode_loop='fast'"):
        tiny_model.generate(batch, max_new_tokens=2, decode_loop="fast")
    with pytest.raises(ValueError, match="check_every=0"):
        tiny_model.generate(batch, max_new_tokens=2, decode_loop="static", check_every=0)


# ------------------------------------------------------------------------------- CUDA, captured
@pytest.fixture(scope="module")
def cuda_model(tiny_ckpt):  # noqa: F811
    from r1omni_fast.model import OmniModel

    return OmniModel.from_pretrained(tiny_ckpt).to("cuda")


@pytest.mark.gpu
def test_draw_is_torch_multinomial_on_cuda():
    probs = torch.randn(32, 151936, device="cuda").mul(3).softmax(-1)
    a = [torch.Generator(device="cuda").manual_seed(i) for i in range(4)]
    b = [torch.Generator(device="cuda").manual_seed(i) for i in range(4)]
    expected = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs.split(8), a)]).squeeze(-1)
    assert torch.equal(decode.draw(probs, b), expected)
    assert all(torch.equal(x.get_state(), y.get_state()) for x, y in zip(a, b))


@pytest.mark.gpu
def test_graph_greedy_equals_eager_loop_and_transformers_fp32(cuda_model):
    batch = _text_batch(cuda_model, device="cuda")
    g, new = 4, 16
    eos = _ending_eos(cuda_model, batch, g, new, do_sample=False, repetition_penalty=3.0)
    common = dict(num_generations=g, max_new_tokens=new, do_sample=False, eos_token_id=eos, repetition_penalty=3.0)
    eager = cuda_model.generate(batch, **common)
    for check_every in (1, 4):
        graph = cuda_model.generate(batch, decode_loop="graph", check_every=check_every, **common)
        _same(eager, graph)
    assert eager.lengths.max() < new
    assert _rows(graph, g) == _transformers_greedy(cuda_model, batch, new, eos, repetition_penalty=3.0)


@pytest.mark.gpu
@pytest.mark.parametrize("settings", SETTINGS)
def test_graph_sampling_equals_eager_loop_and_is_reused(cuda_model, settings):
    batch = _text_batch(cuda_model, device="cuda")
    g, new = 4, 16
    decode.clear_graphs(cuda_model)

    def gens(seed):
        return [torch.Generator(device="cuda").manual_seed(seed + i) for i in range(len(TEXTS))]

    eos = _ending_eos(cuda_model, batch, g, new, generator=gens(3), **settings)
    a, b, c = gens(3), gens(3), gens(3)
    eager = cuda_model.generate(batch, num_generations=g, max_new_tokens=new, eos_token_id=eos, generator=a, **settings)
    graph = cuda_model.generate(batch, num_generations=g, max_new_tokens=new, eos_token_id=eos, generator=b,
                                decode_loop="graph", check_every=4, **settings)
    _same(eager, graph)
    assert all(torch.equal(x.get_state(), y.get_state()) for x, y in zip(a, b))
    captured = dict(decode._GRAPHS[cuda_model.llm])
    again = cuda_model.generate(batch, num_generations=g, max_new_tokens=new, eos_token_id=eos, generator=c,
                                decode_loop="graph", check_every=4, **settings)
    _same(eager, again)
    assert dict(decode._GRAPHS[cuda_model.llm]) == captured  # the same bucket replayed, nothing recaptured


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16-weights", "autocast"])
def test_graph_bf16_ties(tiny_ckpt, precision):  # noqa: F811
    """bf16: the captured loop equals the static loop run eagerly token for token (same kernels,
    same widths). Against the eager loop (a narrower cache: different attention reductions), the
    greedy tokens agree up to a step where the eager loop's two largest logits are within bf16
    rounding of each other (a near-tie), where either token may be taken."""
    from r1omni_fast.model import OmniModel

    model = OmniModel.from_pretrained(tiny_ckpt).to("cuda")
    if precision == "bf16-weights":
        model = model.to(torch.bfloat16)
        context = torch.autocast("cuda", enabled=False)
    else:
        context = torch.autocast("cuda", dtype=torch.bfloat16)
    batch = _text_batch(model, device="cuda")
    new = 24
    with context:
        eager = model.generate(batch, num_generations=2, max_new_tokens=new, do_sample=False, eos_token_id=[-1])
        static = model.generate(batch, num_generations=2, max_new_tokens=new, do_sample=False, eos_token_id=[-1],
                                decode_loop="static")
        graph = model.generate(batch, num_generations=2, max_new_tokens=new, do_sample=False, eos_token_id=[-1],
                               decode_loop="graph")
        _same(static, graph)
        for row in range(eager.completion_ids.shape[0]):
            e, c = eager.completion_ids[row], graph.completion_ids[row]
            differ = (e != c).nonzero()
            if len(differ) == 0:
                continue
            t = int(differ[0])
            prompt = batch["input_ids"][row // 2][batch["attention_mask"][row // 2].bool()]
            ids = torch.cat([prompt, e[:t]])[None]
            with torch.no_grad():
                top = model.llm(input_ids=ids).logits[0, -1].float().topk(2).values
            assert float(top[0] - top[1]) <= 2 ** -6 * float(top[0].abs()) + 1e-3, (row, t, top)
