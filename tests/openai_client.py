#!/usr/bin/env python3
"""The official `openai` client against a running `hybrid-tui serve`.

Usage: openai_client.py BASE_URL API_KEY MODEL_DIR HYBRID_TUI_BINARY

Run by tests/serve.rs with the project's test virtualenv (.venv-test). Each
check asserts; the last line says they all passed.
"""

import json
import subprocess
import sys

import openai

base, key, model_dir, binary = sys.argv[1:5]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)


def check(name, cond, detail=""):
    if not cond:
        print(f"openai-client: FAILED: {name}: {detail}")
        sys.exit(1)
    print(f"openai-client: ok: {name}")


# Models: the chat model first, then the embedding model, with the fields clients read.
models = client.models.list().data
check("models.list has the chat and the embedding model", len(models) == 2, models)
model = models[0].id
embed_model = models[1].id
check("the models have owned_by and created", all(m.owned_by == "hybrid-tui" and m.created > 0 for m in models), models)

messages = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": [{"type": "text", "text": "Tell me about "}, {"type": "text", "text": "the sea."}]},
]

# Chat, non-streaming, with usage.
full = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0.8, seed=42)
c = full.choices[0]
check("chat answers as the assistant", c.message.role == "assistant" and isinstance(c.message.content, str))
check("chat finish_reason is stop or length", c.finish_reason in ("stop", "length"), c.finish_reason)
u = full.usage
check("chat usage adds up", u.total_tokens == u.prompt_tokens + u.completion_tokens and u.completion_tokens <= 24, u)
check("chat object", full.object == "chat.completion" and full.model == model, full)

# Streaming, same seed: the same text; include_usage adds a final usage chunk.
chunks = list(
    client.chat.completions.create(
        model=model, messages=messages, max_tokens=24, temperature=0.8, seed=42, stream=True,
        stream_options={"include_usage": True},
    )
)
text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
check("streamed text equals the non-streamed text for the same seed", text == c.message.content, (text, c.message.content))
check("the first chunk carries the role", chunks[0].choices[0].delta.role == "assistant")
finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
check("one finish_reason, the same as non-streamed", finishes == [c.finish_reason], finishes)
check("include_usage: the last chunk has usage and no choices", chunks[-1].choices == [] and chunks[-1].usage is not None)
check("streamed usage equals the non-streamed usage", chunks[-1].usage.model_dump() == u.model_dump(), (chunks[-1].usage, u))
check("other chunks carry usage null", all(ch.usage is None for ch in chunks[:-1]))

# Without include_usage: no usage chunk.
plain = list(client.chat.completions.create(model=model, messages=messages, max_tokens=5, stream=True, seed=1))
check("no usage chunk unless asked", all(ch.choices for ch in plain))

# The seed repeats at temperature > 0.
a = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=1.0, seed=7)
b = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=1.0, seed=7)
check("the same seed gives the same answer at temperature 1", a.choices[0].message.content == b.choices[0].message.content)

# max_tokens and max_completion_tokens.
m = client.chat.completions.create(model=model, messages=messages, max_tokens=3, temperature=0)
check("max_tokens bounds the answer", m.usage.completion_tokens <= 3, m.usage)
m2 = client.chat.completions.create(model=model, messages=messages, max_completion_tokens=3, temperature=0)
check("max_completion_tokens is the same bound", m2.choices[0].message.content == m.choices[0].message.content)

# Stop strings: the answer ends before the stop string, finish_reason stop.
long = client.completions.create(model=model, prompt="The weather today", max_tokens=40, temperature=0)
t = long.choices[0].text
stop = None
for i in range(4, len(t) - 3):
    cand = t[i : i + 3]
    if cand.strip() and t.find(cand) == i:
        stop = cand
        break
check("the greedy completion is long enough to pick a stop string from", stop is not None, t)
cut = client.completions.create(model=model, prompt="The weather today", max_tokens=40, temperature=0, stop=[stop, "\x00never"])
check("text ends before the stop string", cut.choices[0].text == t[: t.find(stop)], (cut.choices[0].text, t, stop))
check("stop gives finish_reason stop", cut.choices[0].finish_reason == "stop", cut.choices[0].finish_reason)
streamed_cut = "".join(
    ch.choices[0].text
    for ch in client.completions.create(model=model, prompt="The weather today", max_tokens=40, temperature=0, stop=stop, stream=True)
    if ch.choices
)
check("streamed text also stops before it", streamed_cut == cut.choices[0].text, (streamed_cut, cut.choices[0].text))

# Completions, streaming and not, agree; greedy equals `hybrid-tui generate`.
comp = client.completions.create(model=model, prompt="Once upon a time", max_tokens=12, temperature=0)
scomp = "".join(
    ch.choices[0].text
    for ch in client.completions.create(model=model, prompt="Once upon a time", max_tokens=12, temperature=0, stream=True)
)
check("completion streamed equals non-streamed", scomp == comp.choices[0].text, (scomp, comp.choices[0].text))
gen = subprocess.run(
    [binary, "generate", "--model", model_dir, "--prompt", "Once upon a time", "-n", "12", "--temperature", "0", "--json"],
    capture_output=True, text=True, check=True,
)
g = json.loads(gen.stdout)["streams"][0]
check("greedy completion equals generate's text", g["text"] == comp.choices[0].text, (g["text"], comp.choices[0].text))
check("and its token count", len(g["tokens"]) == comp.usage.completion_tokens, (len(g["tokens"]), comp.usage))

chat_gen = subprocess.run(
    [binary, "generate", "--model", model_dir, "--chat", "--prompt", "Hello there", "-n", "12", "--temperature", "0", "--json"],
    capture_output=True, text=True, check=True,
)
cg = json.loads(chat_gen.stdout)["streams"][0]
cc = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello there"}], max_tokens=12, temperature=0)
check("greedy chat equals generate --chat", cg["text"] == cc.choices[0].message.content, (cg["text"], cc.choices[0].message.content))

# A wrong key is refused; errors arrive as the client's exception types.
bad = openai.OpenAI(base_url=base, api_key="sk-wrong", max_retries=0)
try:
    bad.models.list()
    check("a wrong key is refused", False)
except openai.AuthenticationError as e:
    check("a wrong key is refused (401)", e.status_code == 401)
try:
    client.chat.completions.create(model=model, messages=messages, n=2)
    check("n=2 is refused", False)
except openai.BadRequestError as e:
    check("n=2 is refused by name (400)", e.status_code == 400 and e.body.get("param") == "n", e.body)


# Embeddings: a list of texts, float and base64 (the client's default), usage.
texts = ["the sea is calm", "a storm over the sea", "the sea is calm"]
fl = client.embeddings.create(model=embed_model, input=texts, encoding_format="float")
check("one embedding per text, in order", [d.index for d in fl.data] == [0, 1, 2], fl.data)
dims = {len(d.embedding) for d in fl.data}
check("one dimension for all", len(dims) == 1 and dims.pop() > 0, dims)
norm = sum(x * x for x in fl.data[0].embedding) ** 0.5
check("unit vectors", abs(norm - 1.0) < 1e-4, norm)
check("the same text, the same vector", fl.data[0].embedding == fl.data[2].embedding)
check("different texts, different vectors", fl.data[0].embedding != fl.data[1].embedding)
check("embedding usage", fl.usage.prompt_tokens > 0 and fl.usage.total_tokens == fl.usage.prompt_tokens, fl.usage)
check("embedding model echoed", fl.model == embed_model, fl.model)
b64 = client.embeddings.create(model=embed_model, input=texts)
close = all(
    max(abs(a - b) for a, b in zip(x.embedding, y.embedding)) < 1e-6 for x, y in zip(fl.data, b64.data)
)
check("base64 decodes to the float vectors", close)
one = client.embeddings.create(model=embed_model, input="the sea is calm", encoding_format="float")
check("a string input", len(one.data) == 1 and max(abs(a - b) for a, b in zip(one.data[0].embedding, fl.data[0].embedding)) < 1e-5)
try:
    client.embeddings.create(model=model, input="x")
    check("the chat model refuses embeddings", False)
except openai.BadRequestError as e:
    check("the chat model refuses embeddings", "chat model" in str(e), e)

print("openai-client: all checks passed")
