"""Instruction tasks with exact answers: a small, offline stand-in for the Flan 2021 mixture.

Zhao, Ziser & Cohen (2024) instruction-tune Llama 2 on Flan's tasks, grouped into Flan's task clusters, and ask
which layers of the tuned model carry task-specific information. Flan is not available offline, so this module
builds twelve tasks in one instruction template from what is: WordNet 3.0 (topic classes, parts of speech,
hypernyms, antonyms, synonyms), the GCIDE dictionary (definitions), the Python standard library (lines of code)
and generators whose answers are exact by construction (word lists, number names, tiny Python expressions).

| cluster          | task          | input → answer                                     | source    | kind       |
|------------------|---------------|----------------------------------------------------|-----------|------------|
| classification   | `topic`       | a noun's definition → animal / plant / food / ...  | WordNet   | semantic   |
|                  | `pos`         | a word → noun / verb / adjective / adverb          | WordNet   | semantic   |
| relations        | `isa`         | "poodle ; animal" → yes / no (a kind of the class) | WordNet   | semantic   |
|                  | `antonym`     | "hot: cold or green" → cold                        | WordNet   | semantic   |
| paraphrase       | `synonym`     | "big ; large" → yes / no                           | WordNet   | semantic   |
|                  | `gloss_match` | "tiara: a headdress worn ..." → yes / no (*)       | GCIDE     | semantic   |
| structure        | `reverse`     | "cat sun box" → "box sun cat"                      | generated | structured |
|                  | `count`       | "cat sun box" → 3                                  | generated | structured |
| translation      | `num2words`   | "47" → "forty seven"                               | generated | structured |
|                  | `words2num`   | "forty seven" → "47"                               | generated | structured |
| code             | `code_type`   | a stdlib line → import / function / loop / ...     | stdlib    | semantic   |
|                  | `py_eval`     | "max(3, 9)" → 9                                    | generated | structured |

Two tasks are set at the scale of the study's own models. In `isa` the second word is one of the six topic
classes (animal, plant, food, person, object, place), and a wrong `gloss_match` definition (*) is taken from another
part of speech. In pilots on the tiny base, judging a pair of open-class words (a word and its hypernym, its
synonym, a same-class definition) stayed at chance within a few hundred fine-tuning steps, so such tasks would
test nothing. `antonym` and `synonym` keep the harder form; the chapter counts a task whose control does not
learn it and leaves it out of the claims.

*Semantic* tasks judge the meaning of text the base model read in pre-training (the analogue of the paper's
sentiment and paraphrase tasks); *structured* tasks compute something from the form of the input that
pre-training never asked for (the analogue of translation and summarisation). The kind is not the answer type:
each task also declares whether it answers with a *label* (one of a few choices; `count` is a structured label
task, its choices the possible lengths) or a free *generation*, so a comparison of kinds can hold the answer type
fixed. The split is
declared here, before any model is trained, so the chapter can test the paper's "already encoded vs needs
tuning" claim against it.

Splits: every example has a *key* (the word, the number, the word list, ...) and goes to the test split when a
hash of its key falls below ``test_fraction``. Tasks sharing keys (``num2words`` / ``words2num``; the WordNet
tasks keyed by word) therefore share the split, so a multi-task model never trains on one task's test items
through another task.

Scoring (:func:`evaluate`): *exact match* is greedy decoding of the answer followed by the end-of-text token,
computed teacher-forced in one forward pass (greedy decoding reproduces the answer exactly when the argmax at
every answer position is the gold token). Tasks whose examples carry ``choices`` (the label set, or the two
options of ``antonym``) are scored by *choice accuracy*: among the choices' first answer tokens, the gold one has
the largest logit (when two choices share their first token, the whole answers' log-probabilities decide). That
is the task's headline accuracy; for the other tasks it is exact match.
"""
from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

import numpy as np
import torch

from lib.evals import batched, eval_mode

TEMPLATES = {
    "plain": "Task: {instruction}\nInput: {input}\nAnswer:",
    # Llama 2 chat format of LLaMA-Factory's `llama2` template, without its 133-token default system prompt.
    "llama2": "[INST] {instruction}\n{input} [/INST]",
}
KINDS = ("semantic", "structured")
ANSWER_TYPES = ("label", "generation")
BUILD_VERSION = 4  # bump when a builder changes what it produces: it is part of the cached data's key
MAX_WORDS = 10  # longest definition kept (short prompts: the study's base has a 128-token context)


@dataclass(frozen=True)
class Example:
    task: str
    key: str  # decides the split; shared across tasks that use the same item
    input: str
    answer: str
    choices: tuple[str, ...] = ()  # candidate answers (label tasks), empty for free generation


@dataclass(frozen=True)
class TaskSpec:
    name: str
    cluster: str
    kind: str  # "semantic" (judge meaning, label answer) or "structured" (produce a new sequence)
    source: str
    instruction: str
    answer: str = "label"  # "label" (one of a few choices) or "generation" (a free output sequence)


SPECS = {s.name: s for s in (
    TaskSpec("topic", "classification", "semantic", "WordNet 3.0",
             "Is this thing an animal, plant, food, person, object or place?"),
    TaskSpec("pos", "classification", "semantic", "WordNet 3.0",
             "Is this word a noun, verb, adjective or adverb?"),
    TaskSpec("isa", "relations", "semantic", "WordNet 3.0", "Is the first a kind of the second? yes or no"),
    TaskSpec("antonym", "relations", "semantic", "WordNet 3.0", "Pick the opposite of the word."),
    TaskSpec("synonym", "paraphrase", "semantic", "WordNet 3.0", "Do the two words mean the same? yes or no"),
    TaskSpec("gloss_match", "paraphrase", "semantic", "GCIDE", "Does the definition fit the word? yes or no"),
    TaskSpec("reverse", "structure", "structured", "generated", "Write the words in reverse order.", "generation"),
    TaskSpec("count", "structure", "structured", "generated", "How many words are there?"),
    TaskSpec("num2words", "translation", "structured", "generated", "Write the number in words.", "generation"),
    TaskSpec("words2num", "translation", "structured", "generated", "Write the number in digits.", "generation"),
    TaskSpec("code_type", "code", "semantic", "Python standard library",
             "What kind of Python statement is this?"),
    TaskSpec("py_eval", "code", "structured", "generated", "What does this Python expression give?", "generation"),
)}
TASKS = tuple(SPECS)
CLUSTERS = tuple(dict.fromkeys(s.cluster for s in SPECS.values()))

TOPICS = {"noun.animal": "animal", "noun.plant": "plant", "noun.food": "food", "noun.person": "person",
          "noun.artifact": "object", "noun.location": "place"}
POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
CODE_TYPES = ("import", "function", "class", "return", "condition", "loop", "assignment")
GCIDE_POS = {"n": "n", "a": "a", "v. t": "v", "v. i": "v", "adv": "adv"}


# --------------------------------------------------------------------------- splitting and sampling
def in_test(key: str, test_fraction: float) -> bool:
    """Deterministic split: the key's SHA-1 read as a number in [0, 1) below `test_fraction`."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 16**8 < test_fraction


def _sample(items: list[Example], n: int, rng: random.Random, balance: bool) -> list[Example]:
    """`n` distinct-key examples in a seeded order; `balance` cycles through the answers (equal classes)."""
    rng.shuffle(items)
    seen, unique = set(), []
    for ex in items:
        if ex.key not in seen:
            seen.add(ex.key)
            unique.append(ex)
    if not balance:
        return unique[:n]
    by_answer = defaultdict(list)
    for ex in unique:
        by_answer[ex.answer].append(ex)
    queues = [by_answer[a] for a in sorted(by_answer)]
    out = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------- offline sources (parsed once)
@functools.cache
def _synsets():
    from lib.corpora import wordnet_synsets
    return wordnet_synsets()


def _word(w: str) -> str | None:
    """A WordNet lemma usable in a prompt: alphabetic, lower case, 3-12 letters, one word."""
    from lib.tasks.wordnet import lemma
    w = lemma(w)
    return w if re.fullmatch(r"[a-z]{3,12}", w) else None


@functools.cache
def _senses() -> Counter:
    """Number of WordNet synsets holding each usable word: a proxy for how common the word is."""
    return Counter(w for s in _synsets() for w in map(_word, s.words) if w)


def familiar(word: str) -> bool:
    """A word with at least two WordNet senses (so not a rare technical term the base model never read)."""
    return _senses()[word] >= 2


@functools.cache
def _word_pos() -> dict[str, set]:
    pos = defaultdict(set)
    for s in _synsets():
        for w in s.words:
            if (w := _word(w)) is not None:
                pos[w].add(POS_NAMES[s.pos])
    return pos


@functools.cache
def common_words(n: int = 400) -> tuple[str, ...]:
    """The `n` nouns of 3-6 letters with the most WordNet senses (a proxy for frequency), sorted."""
    counts = Counter(w for s in _synsets() if s.pos == "n" for w in map(_word, s.words) if w and len(w) <= 6)
    return tuple(sorted(w for w, _ in counts.most_common(n)))


@functools.cache
def _gcide() -> tuple[tuple[str, str, str], ...]:
    """(headword, part of speech, first definition) of GCIDE entries with a plain one-word headword."""
    from lib.corpora import gcide_entries
    head = re.compile(r"^([A-Z][a-z]{2,11}) , (n|a|v\. t|v\. i|adv)\. (.*)$")
    out = []
    for entry in gcide_entries():
        m = head.match(entry)
        if not m:
            continue
        text = m.group(3)
        while re.search(r"\[[^\[\]]*\]", text):  # etymologies, which nest brackets
            text = re.sub(r"\[[^\[\]]*\]", "", text)
        text = re.sub(r"^(\s*\([^)]*\)|\s*1\.|\s*&amp;|\s*& i\.)+", "", text).strip()  # domain, "1."
        text = re.split(r"[.;:]|--| 2\. ", text)[0].strip()
        if 3 <= len(text.split()) <= MAX_WORDS and "[" not in text and "?" not in text:
            out.append((m.group(1).lower(), GCIDE_POS[m.group(2)], text))
    return tuple(out)


@functools.cache
def _code_lines() -> tuple[tuple[str, str], ...]:
    """(stripped line, statement type) from the standard library's source files."""
    from lib.corpora import python_stdlib
    rules = (("import", r"(import|from) [\w.]+"), ("function", r"def \w+\("), ("class", r"class \w+"),
             ("return", r"return\b"), ("condition", r"(if|elif) "), ("loop", r"(for|while) "),
             ("assignment", r"[a-z_][\w.]* = "))
    out = set()
    for doc in python_stdlib():
        for line in doc.splitlines():
            line = line.strip()
            if not 8 <= len(line) <= 60 or "#" in line or '"' in line or "'" in line:
                continue
            for label, pattern in rules:
                if re.match(pattern, line):
                    out.add((line, label))
                    break
    return tuple(sorted(out))


# --------------------------------------------------------------------------- builders: every candidate example
def _topic() -> list[Example]:
    from lib.tasks.wordnet import definition
    out = []
    for s in _synsets():
        d = definition(s.gloss)
        if s.lexname in TOPICS and 3 <= len(d.split()) <= MAX_WORDS:
            out.append(Example("topic", f"syn:{s.offset}", d, TOPICS[s.lexname], tuple(TOPICS.values())))
    return out


def _pos() -> list[Example]:
    labels = ("noun", "verb", "adjective", "adverb")
    return [Example("pos", f"w:{w}", w, next(iter(p)), labels) for w, p in sorted(_word_pos().items())
            if len(p) == 1 and familiar(w)]


def _isa(rng: random.Random) -> list[Example]:
    """"poodle ; animal": is the noun a kind of the category (one of the six `TOPICS` words)? A "no" names a
    category that none of the word's noun senses belongs to, so it is surely wrong."""
    cats = defaultdict(set)  # word -> categories of its noun senses
    for s in _synsets():
        if s.pos == "n" and s.lexname in TOPICS:
            for w in map(_word, s.words):
                if w:
                    cats[w].add(TOPICS[s.lexname])
    names = sorted(set(TOPICS.values()))
    out = []
    for s in _synsets():
        x = _word(s.words[0]) if s.pos == "n" and s.lexname in TOPICS else None
        if not x or not familiar(x):
            continue
        out.append(Example("isa", f"w:{x}", f"{x} ; {TOPICS[s.lexname]}", "yes", ("yes", "no")))
        out.append(Example("isa", f"w:{x}", f"{x} ; {rng.choice([c for c in names if c not in cats[x]])}", "no",
                           ("yes", "no")))
    return out


def _antonym(rng: random.Random) -> list[Example]:
    adj = {s.offset: s for s in _synsets() if s.pos in "as"}
    pool = sorted({w for s in adj.values() for w in map(_word, s.words) if w})
    out = []
    for s in adj.values():
        for sym, o, _ in s.pointers:
            x, y = _word(s.words[0]), o in adj and _word(adj[o].words[0])
            if sym == "!" and x and y and familiar(x):
                z = rng.choice(pool)
                if z not in (x, y):
                    a, b = (y, z) if rng.random() < 0.5 else (z, y)
                    out.append(Example("antonym", f"w:{x}", f"{x}: {a} or {b}", y, (a, b)))
    return out


def _synonym(rng: random.Random) -> list[Example]:
    groups = [ws for s in _synsets() if len(ws := sorted({w for w in map(_word, s.words) if w})) >= 2]
    synonyms = defaultdict(set)  # word -> every word sharing a synset with it
    for ws in groups:
        for w in ws:
            synonyms[w].update(ws)
    out = []
    for ws in groups:
        x, y = rng.sample(ws, 2)
        if not familiar(x):
            continue
        out.append(Example("synonym", f"w:{x}", f"{x} ; {y}", "yes", ("yes", "no")))
        other = rng.choice(rng.choice(groups))
        if other not in synonyms[x]:
            out.append(Example("synonym", f"w:{x}", f"{x} ; {other}", "no", ("yes", "no")))
    return out


def _gloss_match(rng: random.Random) -> list[Example]:
    entries = _gcide()
    by_pos = defaultdict(list)
    for e in entries:
        by_pos[e[1]].append(e)
    out = []
    for word, pos, text in entries:
        if word[:4] in text.lower():
            continue  # "dubbing: the act of dubbing" would be solved by spotting the repeated word
        out.append(Example("gloss_match", f"w:{word}", f"{word}: {text}", "yes", ("yes", "no")))
        # another part of speech: the definition of a thing cannot fit an action (see the module's note on scale)
        other = rng.choice(by_pos[rng.choice([p for p in sorted(by_pos) if p != pos])])
        if other[0] != word and word[:4] not in other[2].lower():
            out.append(Example("gloss_match", f"w:{word}", f"{word}: {other[2]}", "no", ("yes", "no")))
    return out


def _word_lists(task: str, rng: random.Random, n: int, lo: int, hi: int) -> list[Example]:
    words = common_words()
    out = []
    for _ in range(n):
        ws = rng.sample(words, rng.randint(lo, hi))
        if task == "reverse":
            out.append(Example(task, f"list:{' '.join(ws)}", " ".join(ws), " ".join(reversed(ws))))
        else:  # count: a label task over the possible lengths (a structured task with a label answer)
            out.append(Example(task, f"list:{' '.join(ws)}", " ".join(ws), str(len(ws)),
                               tuple(str(k) for k in range(lo, hi + 1))))
    return out


N_NUMBERS = 3000  # 0..2999: enough for 20 % test keys beyond 500
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
        "seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """English name of 0 <= n <= 9999, e.g. 2347 -> 'two thousand three hundred forty seven' (no 'and', no hyphen)."""
    if not 0 <= n <= 9999:
        raise ValueError(f"n must be in [0, 9999], got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    return _ONES[n // 1000] + " thousand" + ("" if n % 1000 == 0 else " " + number_words(n % 1000))


def _numbers(task: str) -> list[Example]:
    out = []
    for n in range(N_NUMBERS):
        digits, words = str(n), number_words(n)
        x, y = (digits, words) if task == "num2words" else (words, digits)
        out.append(Example(task, f"num:{n}", x, y))
    return out


def _code_type() -> list[Example]:
    return [Example("code_type", f"code:{line}", line, label, CODE_TYPES) for line, label in _code_lines()]


def _py_eval(rng: random.Random, n: int) -> list[Example]:
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        expr = rng.choice([f"{a} + {b}", f"{max(a, b)} - {min(a, b)}", f"{a % 10} * {b % 10}", f"max({a}, {b})",
                           f"min({a}, {b})", f"len('{'x' * (a % 9 + 1)}')", f"{a} // {b % 9 + 1}"])
        out.append(Example("py_eval", f"expr:{expr}", expr, str(eval(expr))))  # noqa: S307 (generated arithmetic)
    return out


def candidates(task: str, seed: int = 0) -> list[Example]:
    """Every candidate example of `task` (before splitting and sampling), deterministic for a seed."""
    rng = random.Random(f"{task}-{seed}")
    builders = {
        "topic": _topic, "pos": _pos, "isa": lambda: _isa(rng), "antonym": lambda: _antonym(rng),
        "synonym": lambda: _synonym(rng), "gloss_match": lambda: _gloss_match(rng),
        "reverse": lambda: _word_lists("reverse", rng, 40_000, 3, 3),
        "count": lambda: _word_lists("count", rng, 40_000, 2, 6),
        "num2words": lambda: _numbers("num2words"), "words2num": lambda: _numbers("words2num"),
        "code_type": _code_type, "py_eval": lambda: _py_eval(rng, 40_000),
    }
    if task not in builders:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    return builders[task]()


@dataclass
class TaskData:
    spec: TaskSpec
    train: list[Example]
    test: list[Example]


def build(task: str, n_train: int, n_test: int, seed: int = 0, test_fraction: float = 0.2) -> TaskData:
    """Train and test examples of `task` with disjoint keys (test keys hash below `test_fraction`).

    Label tasks are balanced over their answers. Raises ValueError when the task has too few examples.
    """
    pool = candidates(task, seed)
    rng = random.Random(f"sample-{task}-{seed}")
    balance = bool(pool and pool[0].choices)
    train = _sample([e for e in pool if not in_test(e.key, test_fraction)], n_train, rng, balance)
    test = _sample([e for e in pool if in_test(e.key, test_fraction)], n_test, rng, balance)
    if len(train) < n_train or len(test) < n_test:
        raise ValueError(f"task {task!r} has {len(train)} train / {len(test)} test examples, "
                         f"fewer than asked ({n_train} / {n_test})")
    return TaskData(SPECS[task], train, test)


def to_json(data: dict[str, TaskData]) -> str:
    return json.dumps({t: {"train": [asdict(e) for e in d.train], "test": [asdict(e) for e in d.test]}
                       for t, d in data.items()})


def from_json(text: str) -> dict[str, TaskData]:
    def ex(d):
        return Example(**{**d, "choices": tuple(d["choices"])})
    return {t: TaskData(SPECS[t], [ex(e) for e in d["train"]], [ex(e) for e in d["test"]])
            for t, d in json.loads(text).items()}


def fingerprint(data: dict[str, TaskData]) -> str:
    return hashlib.sha256(to_json(data).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- encoding
def prompt(ex: Example, template: str = "plain") -> str:
    return TEMPLATES[template].format(instruction=SPECS[ex.task].instruction, input=ex.input)


@dataclass
class Encoded:
    """Right-padded token rows: prompt + " answer" + end-of-text.

    input_ids, attention_mask, labels: (N, T); labels are -100 except on the answer tokens and the end token.
    last: (N,) position of each row's last prompt token (where the representation is read).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    last: torch.Tensor

    def train_data(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels}

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(examples: list[Example], tokenizer, max_len: int, template: str = "plain",
           answers: list[str] | None = None) -> Encoded:
    """Tokenize examples (with `answers` in place of the gold ones, if given) into an :class:`Encoded`.

    A row longer than `max_len` loses tokens from the start of its prompt, so the template's end survives.
    A beginning-of-text token is prepended when the tokenizer has one.
    """
    answers = [e.answer for e in examples] if answers is None else answers
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = tokenizer.eos_token_id
    prompts = tokenizer([prompt(e, template) for e in examples], add_special_tokens=False)["input_ids"]
    targets = tokenizer([" " + a for a in answers], add_special_tokens=False)["input_ids"]
    rows = []
    for p, a in zip(prompts, targets):
        a = a + [eos]
        if len(a) >= max_len - 1:
            raise ValueError(f"an answer of {len(a)} tokens does not fit max_len={max_len}")
        p = (bos + p)[-(max_len - len(a)):]
        rows.append((p, a))
    width = max(len(p) + len(a) for p, a in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (p, a) in enumerate(rows):
        n = len(p) + len(a)
        ids[i, :n] = torch.tensor(p + a)
        mask[i, :n] = 1
        labels[i, len(p):n] = torch.tensor(a)
    return Encoded(ids, mask, labels, torch.tensor([len(p) - 1 for p, _ in rows]))


# --------------------------------------------------------------------------- scoring
def first_token_ids(examples: list[Example], tokenizer) -> tuple[torch.Tensor, np.ndarray]:
    """((N, C) id of each choice's first answer token, -1 where a row has fewer choices; (N,) bool: the row's
    choices start with distinct tokens, so comparing first-token logits decides between them)."""
    width = max(len(e.choices) for e in examples)
    ids = torch.full((len(examples), width), -1, dtype=torch.long)
    distinct = np.zeros(len(examples), dtype=bool)
    for i, e in enumerate(examples):
        firsts = [row[0] for row in tokenizer([" " + c for c in e.choices], add_special_tokens=False)["input_ids"]]
        ids[i, :len(firsts)] = torch.tensor(firsts)
        distinct[i] = len(set(firsts)) == len(firsts)
    return ids, distinct


def forward_rows(model, enc: Encoded, first_ids: torch.Tensor | None = None, states: bool = False,
                 batch_size: int = 64) -> dict[str, np.ndarray]:
    """One teacher-forced pass over encoded rows. Returns
    "logp" (N,): sum of log-probabilities of the answer tokens (end token included);
    "exact" (N,) bool: every answer token is the argmax, i.e. greedy decoding reproduces the answer;
    "first" (N, C): log-probability of each `first_ids` token at the first answer position (if given);
    "states" (n_layers, N, d_model): hidden states at the last prompt token, Hugging Face's hidden_states[1:]
    (if `states`)."""
    rows = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "labels": enc.labels, "last": enc.last}
    if first_ids is not None:
        rows["first_ids"] = first_ids

    def one(b: dict) -> dict[str, torch.Tensor]:
        dev = model.device
        width = int(b["attention_mask"].sum(1).max())  # trim the batch's padding
        ids, last = b["input_ids"][:, :width].to(dev), b["last"].to(dev)
        # Answers are read from the last prompt token on: the unembedding runs on positions lo .. width-2 only
        # (position t predicts t + 1), not on every prompt token (Gemma's vocabulary has 262k words).
        lo = int(last.min())
        keep = torch.arange(lo, width - 1, device=dev)
        res = model(ids, attention_mask=b["attention_mask"][:, :width].to(dev), output_hidden_states=states,
                    logits_to_keep=keep)
        logits = res.logits  # (B, width - 1 - lo, vocab)
        labels = b["labels"][:, 1 + lo:width].to(dev)
        on = labels.ne(-100)  # (B, K): the kept positions that predict an answer token
        lp = torch.log_softmax(logits[on].float(), -1)  # (answer tokens, vocab)
        target = labels[on]
        tok = torch.zeros(on.shape, device=lp.device).masked_scatter_(on, lp.gather(-1, target[:, None])[:, 0])
        hit = torch.ones(on.shape, dtype=torch.bool, device=lp.device).masked_scatter_(on, lp.argmax(-1) == target)
        out = {"logp": tok.sum(1).cpu(), "exact": hit.all(1).cpu()}
        at = torch.arange(len(ids), device=dev)
        if "first_ids" in b:  # the last prompt position predicts the first answer token
            f = b["first_ids"].to(dev)
            first = torch.log_softmax(logits[at, last - lo].float(), -1)
            out["first"] = first.gather(-1, f.clamp(min=0)).masked_fill(f < 0, -torch.inf).cpu()
        if states:
            out["states"] = torch.stack([h[at, last] for h in res.hidden_states[1:]]).float().cpu()
        return out

    with eval_mode(model):
        parts = batched(one, rows, batch_size, cat=False)
    return {k: torch.cat([p[k] for p in parts], dim=1 if k == "states" else 0).numpy() for k in parts[0]}


def last_states(model, enc: Encoded, batch_size: int = 64) -> np.ndarray:
    """(n_layers, N, d_model) hidden states at each row's last prompt token (Hugging Face hidden_states[1:]), with
    the unembedding run on one position only: for models read, not scored."""
    rows = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "last": enc.last}

    def one(b: dict) -> torch.Tensor:
        dev = model.device
        width = int(b["attention_mask"].sum(1).max())
        res = model(b["input_ids"][:, :width].to(dev), attention_mask=b["attention_mask"][:, :width].to(dev),
                    output_hidden_states=True, logits_to_keep=1)
        at, last = torch.arange(len(res.hidden_states[0]), device=dev), b["last"].to(dev)
        return torch.stack([h[at, last] for h in res.hidden_states[1:]]).float().cpu()

    with eval_mode(model):
        parts = batched(one, rows, batch_size, cat=False)
    return torch.cat(parts, dim=1).numpy()


def first_answer_tokens(examples: list[Example], tokenizer) -> list[int]:
    """The first token of each example's answer (as the model is trained to produce it: after a space)."""
    return [row[0] for row in tokenizer([" " + e.answer for e in examples], add_special_tokens=False)["input_ids"]]


def _full_choice(model, tokenizer, examples: list[Example], max_len: int, template: str,
                 batch_size: int = 64) -> np.ndarray:
    """(N,) bool: the gold answer has the highest summed log-probability among each example's choices."""
    flat = [(i, c) for i, e in enumerate(examples) for c in e.choices]
    enc = encode([examples[i] for i, _ in flat], tokenizer, max_len, template, answers=[c for _, c in flat])
    best = {}
    for (i, c), lp in zip(flat, forward_rows(model, enc, batch_size=batch_size)["logp"]):
        if i not in best or lp > best[i][1]:
            best[i] = (c, lp)
    return np.array([best[i][0] == e.answer for i, e in enumerate(examples)])


def evaluate(model, tokenizer, examples: list[Example], max_len: int, template: str = "plain",
             states: bool = False, batch_size: int = 64) -> tuple[dict[str, float], np.ndarray | None]:
    """({"exact_match", "accuracy"}, last-prompt-token states (n_layers, N, d_model) or None) on `examples`.

    accuracy: for examples with choices, the gold choice has the largest first-answer-token logit among the
    choices (when their first tokens differ; otherwise the largest summed log-probability of the whole answer);
    for free generation, exact match. `batch_size` rows per forward pass (the logits are batch x length x vocab).
    """
    enc = encode(examples, tokenizer, max_len, template)
    first, distinct = first_token_ids(examples, tokenizer) if examples[0].choices else (None, None)
    out = forward_rows(model, enc, first, states, batch_size)
    metrics = {"exact_match": float(out["exact"].mean())}
    if first is None:
        return {**metrics, "accuracy": metrics["exact_match"]}, out.get("states")
    gold = torch.tensor([e.choices.index(e.answer) for e in examples]).numpy()
    correct = out["first"].argmax(1) == gold
    if not distinct.all():
        clash = np.flatnonzero(~distinct)
        correct[clash] = _full_choice(model, tokenizer, [examples[i] for i in clash], max_len, template, batch_size)
    return {**metrics, "accuracy": float(correct.mean())}, out.get("states")


def score(model, tokenizer, examples: list[Example], max_len: int, template: str = "plain") -> dict[str, float]:
    """{"exact_match", "accuracy"} of `model` on `examples` (see :func:`evaluate`)."""
    return evaluate(model, tokenizer, examples, max_len, template)[0]
