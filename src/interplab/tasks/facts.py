"""Factual recall: country → capital (the kind of subject–relation–object fact that Meng et al.
2022, "Locating and Editing Factual Associations in GPT" (ROME, arXiv:2202.05262), locate with
causal tracing).

"The capital of France is" → " Paris". The corrupt prompt asks about another country whose name
is the same number of tokens, so every position aligns; ``wrong`` is that country's capital.
``meta["subject_positions"]`` lists, per pair, the prompt positions of the subject (country)
tokens — the tokens causal tracing corrupts with noise and restores layer by layer — and
``meta["subjects"]`` / ``meta["templates"]`` the per-pair country and template index.
"""

from __future__ import annotations

import random

from interplab.tasks.base import Pair, Task
from interplab.tasks.registry import register_task
from interplab.tasks.tokens import fill, word_ids

TEMPLATES = ("The capital of[ART] [SUBJECT] is", "The capital city of[ART] [SUBJECT] is")

# (country, capital, takes "the"). Capitals of one word, so one token is at least plausible.
CAPITALS = (
    ("France", "Paris", False), ("Germany", "Berlin", False), ("Italy", "Rome", False),
    ("Spain", "Madrid", False), ("Japan", "Tokyo", False), ("Russia", "Moscow", False),
    ("China", "Beijing", False), ("Egypt", "Cairo", False), ("Greece", "Athens", False),
    ("Austria", "Vienna", False), ("Ireland", "Dublin", False), ("Portugal", "Lisbon", False),
    ("Canada", "Ottawa", False), ("Australia", "Canberra", False), ("Estonia", "Tallinn", False),
    ("Poland", "Warsaw", False), ("Hungary", "Budapest", False), ("Norway", "Oslo", False),
    ("Sweden", "Stockholm", False), ("Finland", "Helsinki", False), ("Denmark", "Copenhagen", False),
    ("Belgium", "Brussels", False), ("Switzerland", "Bern", False), ("Turkey", "Ankara", False),
    ("Iran", "Tehran", False), ("Iraq", "Baghdad", False), ("Syria", "Damascus", False),
    ("Lebanon", "Beirut", False), ("Thailand", "Bangkok", False), ("Vietnam", "Hanoi", False),
    ("Indonesia", "Jakarta", False), ("Kenya", "Nairobi", False), ("Nigeria", "Abuja", False),
    ("Ghana", "Accra", False), ("Morocco", "Rabat", False), ("Tunisia", "Tunis", False),
    ("Libya", "Tripoli", False), ("Sudan", "Khartoum", False), ("Peru", "Lima", False),
    ("Chile", "Santiago", False), ("Colombia", "Bogota", False), ("Venezuela", "Caracas", False),
    ("Cuba", "Havana", False), ("Ecuador", "Quito", False), ("Uruguay", "Montevideo", False),
    ("Romania", "Bucharest", False), ("Bulgaria", "Sofia", False), ("Serbia", "Belgrade", False),
    ("Croatia", "Zagreb", False), ("Iceland", "Reykjavik", False), ("Scotland", "Edinburgh", False),
    ("Wales", "Cardiff", False), ("Nepal", "Kathmandu", False), ("Bangladesh", "Dhaka", False),
    ("Pakistan", "Islamabad", False), ("Afghanistan", "Kabul", False), ("Jamaica", "Kingston", False),
    ("Netherlands", "Amsterdam", True), ("Philippines", "Manila", True),
    ("United States", "Washington", True), ("United Kingdom", "London", True),
    ("Czech Republic", "Prague", True),
)


@register_task
class Facts(Task):
    """Country → capital recall; the corrupt asks about a country of equal token length."""

    name = "facts"

    def __init__(self, tokenizer, config) -> None:
        super().__init__(tokenizer, config)
        # Corrupt countries come from the same group: same article, same number of tokens.
        groups: dict[tuple[bool, int], list[int]] = {}
        for i, (country, _, the) in enumerate(CAPITALS):
            groups.setdefault((the, len(word_ids(tokenizer, f" {country}"))), []).append(i)
        self.partners = {i: [j for j in g if j != i] for g in groups.values() for i in g}
        self.pairable = [i for i, p in self.partners.items() if p]
        self.pairable.sort()

    def propose(self, rng: random.Random) -> Pair:
        if not self.pairable:  # no two countries share a token length: every candidate fails
            a = b = rng.randrange(len(CAPITALS))
            while b == a:
                b = rng.randrange(len(CAPITALS))
        else:
            a = rng.choice(self.pairable)
            b = rng.choice(self.partners[a])
        index = rng.randrange(len(TEMPLATES))
        (ca, capa, the), (cb, capb, _) = CAPITALS[a], CAPITALS[b]
        art = " the" if the else ""
        clean, cs = fill(TEMPLATES[index], {"ART": art, "SUBJECT": ca})
        corrupt, ks = fill(TEMPLATES[index], {"ART": art, "SUBJECT": cb})
        return Pair(
            clean, corrupt, answer=f" {capa}", wrong=f" {capb}",
            clean_spans={"subject": cs["SUBJECT"][0]}, corrupt_spans={"subject": ks["SUBJECT"][0]},
            swaps=((f" {ca}", f" {cb}"),), info={"subjects": ca, "templates": index},
        )
