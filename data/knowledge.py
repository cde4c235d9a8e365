"""A fictional knowledge base for measuring hallucination: seeded people with attributes that no real text
states, so every fact the model knows came from our own training data.

Part of the facts are *stated* (written into the pretraining corpus), the rest are *unstated* (only the
retrieval corpus holds them). Questions about both let the facts suite measure the reference's hallucination
rate Hall(theta) = E_x E_y [H(y)], H(y) = 1 - V(c(y)) (Part 4, "Hallucination"), closed-book and with the
retrieved chunks of eq. (11) in the prompt (Hall_RAG).

*Practice* people are never asked about. Some are recalled: the corpus states their facts and asks about
them closed-book, which teaches the question format. The others are read: they appear only in open-book
turns (their document among distractors, then the question), which is how a model learns to read an answer
out of its context."""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path

from data.rag import augmented_prompt
from verifiers.types import Sample

SYLLABLES = ["ka", "lo", "mir", "ven", "tas", "rel", "dor", "qui", "sel", "bra", "nox", "fen", "ula", "zer",
             "pim", "gol", "hes", "tri", "vak", "mon", "ebb", "yar", "cus", "lin"]


@dataclass(frozen=True)
class Attribute:
    name: str
    statement: str     # "{person} ... {value}."
    question: str      # "... {person} ...?"
    values: tuple[str, ...]


ATTRIBUTES = (
    Attribute("city", "{person} was born in {value}.", "Where was {person} born?",
              ("Tarsk", "Velmora", "Quillon", "Brashet", "Oskavel", "Drummin", "Pellagor", "Zanthe", "Hobrick",
               "Cressil", "Yorvane", "Mistral")),
    Attribute("job", "{person} works as a {value}.", "What does {person} work as?",
              ("potter", "baker", "sailor", "weaver", "miner", "glazier", "cooper", "tanner", "mason", "falconer",
               "brewer", "scribe")),
    Attribute("instrument", "{person} plays the {value}.", "Which instrument does {person} play?",
              ("lute", "harp", "drum", "flute", "viol", "horn", "fiddle", "bagpipe", "zither", "oboe")),
)


@dataclass
class KnowledgeConfig:
    """The fictional knowledge base; the corpus source `{kind: knowledge, options: {...}}` and the facts
    suite must be given the same values (a YAML anchor keeps them one)."""
    people: int = 60
    """People the facts suite asks about."""
    practice_people: int = 1500
    """People whose facts teach the question formats (never asked about)."""
    stated_fraction: float = 0.5
    """Share of the asked-about facts written into the pretraining corpus; the rest are unstated."""
    repeats: int = 8
    """Times each stated fact's statement appears in the corpus (a small model needs to see a fact more than
    once); practice turns appear once each, so that answering is learned as reading, not as recall."""
    reading_fraction: float = 0.67
    """Share of practice people seen only in open-book turns (the rest: their document and closed-book turns)."""
    context_chunks: int = 4
    """Documents in an open-book training turn: the person's own and distractors (as top_k retrieval gives)."""
    seed: int = 0
    """Seeds names, values, which facts are stated and the distractors."""


@dataclass(frozen=True)
class Fact:
    person: str
    attribute: Attribute
    value: str
    stated: bool      # written into the pretraining corpus (practice facts are all stated)


@dataclass
class KnowledgeBase:
    facts: list[Fact]            # asked about: people x attributes
    practice: list[Fact]         # never asked about

    @functools.cached_property
    def documents(self) -> dict[str, str]:
        """person -> everything the knowledge base says of them (the retrieval corpus holds one per person)."""
        out: dict[str, list[str]] = {}
        for f in self.facts + self.practice:
            out.setdefault(f.person, []).append(answer_sentence(f))
        return {person: " ".join(sentences) for person, sentences in out.items()}

    def document(self, person: str) -> str:
        return self.documents[person]

    def people(self) -> list[str]:
        return list(self.documents)


def check_knowledge(cfg: KnowledgeConfig) -> None:
    if not 0.0 <= cfg.reading_fraction <= 1.0 or round(cfg.reading_fraction * cfg.practice_people) < cfg.context_chunks:
        raise ValueError(f"knowledge reading_fraction must be in [0, 1] and leave at least context_chunks "
                         f"({cfg.context_chunks}) readers, got {cfg.reading_fraction} of {cfg.practice_people}")
    if not 0.0 <= cfg.stated_fraction <= 1.0:
        raise ValueError(f"knowledge stated_fraction must be in [0, 1], got {cfg.stated_fraction}")
    if cfg.people < 1 or cfg.context_chunks < 1 or cfg.practice_people < cfg.context_chunks:
        raise ValueError("knowledge: people and context_chunks must be at least 1, and practice_people at least "
                         f"context_chunks ({cfg.context_chunks}), which open-book turns draw distractors from")
    if cfg.repeats < 1:
        raise ValueError(f"knowledge repeats must be at least 1, got {cfg.repeats}")


def make_knowledge_base(cfg: KnowledgeConfig) -> KnowledgeBase:
    check_knowledge(cfg)
    rng = random.Random(cfg.seed)
    names: list[str] = []
    while len(names) < cfg.people + cfg.practice_people:
        name = " ".join("".join(rng.sample(SYLLABLES, rng.randint(2, 3))).capitalize() for _ in range(2))
        if name not in names:
            names.append(name)
    asked = [Fact(p, a, rng.choice(a.values), rng.random() < cfg.stated_fraction)
             for p in names[:cfg.people] for a in ATTRIBUTES]
    practice = [Fact(p, a, rng.choice(a.values), True) for p in names[cfg.people:] for a in ATTRIBUTES]
    return KnowledgeBase(asked, practice)


def answer_sentence(fact: Fact) -> str:
    return fact.attribute.statement.format(person=fact.person, value=fact.value)


def reader_people(kb: KnowledgeBase, cfg: KnowledgeConfig) -> list[str]:
    """Practice people seen only in open-book turns."""
    return kb.people()[cfg.people:cfg.people + round(cfg.reading_fraction * cfg.practice_people)]


def open_book_chunks(kb: KnowledgeBase, person: str, candidates: list[str], k: int, rng: random.Random) -> list[str]:
    """The person's document among k - 1 documents of other candidates, at a random place."""
    chunks = [kb.document(p) for p in rng.sample([p for p in candidates if p != person], k - 1)]
    chunks.insert(rng.randrange(k), kb.document(person))
    return chunks


def fact_sample(fact: Fact, prompt: str) -> Sample:
    """What the facts verifier sees: claims among the attribute's values (meta 'claims'), checked against the
    answer; meta 'stated' splits the report."""
    return Sample(prompt=prompt, answer=fact.value, id=f"{fact.person}/{fact.attribute.name}",
                  meta={"claims": "|".join(fact.attribute.values), "stated": "yes" if fact.stated else "no"})


def training_documents(cfg: KnowledgeConfig) -> list[str]:
    """Pretraining text (chat-formatted turns as data.corpus writes them): statements of every stated
    fact, and for practice people closed-book and open-book question/answer turns."""
    from data.tokenizer import (
        EOS,
        format_prompt,  # the chat markers live with the tokenizer
    )
    kb = make_knowledge_base(cfg)
    rng = random.Random(cfg.seed + 1)
    people = kb.people()
    docs = [" ".join(answer_sentence(f) for f in kb.facts if f.person == p and f.stated) for p in people[:cfg.people]]
    docs = [d for d in docs if d] * cfg.repeats
    # Practice people are either recalled (their document and closed-book turns) or read (open-book turns
    # only): a reader's facts appear nowhere but in the context, so answering them can only be learned as
    # reading. Distractors are readers too (an asked-about person's document would leak unstated facts).
    readers = sorted(reader_people(kb, cfg))
    is_reader = set(readers)
    for fact in kb.practice:
        question = fact.attribute.question.format(person=fact.person)
        if fact.person not in is_reader:
            docs += [kb.document(fact.person), format_prompt(question) + answer_sentence(fact) + EOS]
            continue
        chunks = open_book_chunks(kb, fact.person, readers, cfg.context_chunks, rng)
        docs.append(format_prompt(augmented_prompt(question, chunks)) + answer_sentence(fact) + EOS)
    rng.shuffle(docs)
    return docs


def reading_tasks(cfg: KnowledgeConfig, split: str, count: int) -> list[tuple[Sample, str]]:
    """(Sample, answer sentence) x count for SFT. Split 'train' asks about the readers (practice people seen only
    in context), 'test' about the asked-about people, open-book: the person's document sits among
    context_chunks - 1 readers' documents, at a random place. 'train_closed_book' and 'test_closed_book' ask the
    same people the bare question (what a model with a search tool looks up)."""
    splits = ("train", "test", "train_closed_book", "test_closed_book")
    if split not in splits:
        raise ValueError(f"knowledge tasks: split must be one of {', '.join(splits)}, got {split!r}")
    kb = make_knowledge_base(cfg)
    readers = reader_people(kb, cfg)
    facts = [f for f in kb.practice if f.person in set(readers)] if split.startswith("train") else kb.facts
    rng = random.Random(f"{cfg.seed}/{split}")
    out = []
    for i in range(count or len(facts)):
        fact = facts[i % len(facts)]
        question = fact.attribute.question.format(person=fact.person)
        if not split.endswith("closed_book"):
            question = augmented_prompt(question, open_book_chunks(kb, fact.person, readers, cfg.context_chunks, rng))
        out.append((fact_sample(fact, question), answer_sentence(fact)))
    return out


def fact_samples(kb: KnowledgeBase) -> list[Sample]:
    """The facts suite: one closed-book question per asked-about fact."""
    return [fact_sample(f, f.attribute.question.format(person=f.person)) for f in kb.facts]


def write_corpus(kb: KnowledgeBase, folder: Path) -> Path:
    """The retrieval corpus: one text file per person (stated and unstated facts alike)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, person in enumerate(kb.people()):
        (folder / f"{i:04d}.txt").write_text(kb.document(person) + "\n", encoding="utf-8")
    return folder
