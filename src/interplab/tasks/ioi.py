"""Indirect object identification (Wang et al. 2022, "Interpretability in the Wild: a Circuit
for Indirect Object Identification in GPT-2 small", arXiv:2211.00593).

"When Mary and John went to the store, John gave a drink to" → " Mary". The indirect object
(IO) is named once, the subject (S) twice (S1, S2); the model should complete with IO. The
templates, places, objects and names are those of the paper's released dataset code; BABA
templates name S first, ABBA templates IO first. The corrupt prompt is the paper's "ABC"
distribution: the same template with three fresh names in the IO, S1 and S2 slots, so nothing
in it says which of the clean names to pick. ``answers`` is IO, ``wrong`` is S (the logit
difference IO − S is the paper's metric). ``meta`` holds the prompt positions ``io_positions``,
``s1_positions``, ``s2_positions`` and ``end_positions`` (one int per pair: names are single
tokens here), and the per-pair ``templates``, ``orders``, ``io_names`` and ``s_names``.
"""

from __future__ import annotations

import random

from interplab.tasks.base import Pair, Task
from interplab.tasks.registry import register_task
from interplab.tasks.tokens import fill

# Wang et al.'s templates in BABA order ([B] is S, [A] is IO); the final [A] is the answer.
BABA_TEMPLATES = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to [A]",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to [A]",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to [A]",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to [A]",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to [A]",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to [A]",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to [A]",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to [A]",
)

PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "house", "station")
OBJECTS = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack")

NAMES = (
    "Aaron", "Adam", "Alan", "Alex", "Alice", "Amy", "Anderson", "Andre", "Andrew", "Andy",
    "Anna", "Anthony", "Arthur", "Austin", "Blake", "Brandon", "Brian", "Carter", "Charles",
    "Charlie", "Christian", "Christopher", "Clark", "Cole", "Collins", "Connor", "Crew",
    "Crystal", "Daniel", "David", "Dean", "Edward", "Elizabeth", "Emily", "Eric", "Eva", "Ford",
    "Frank", "George", "Georgia", "Graham", "Grant", "Henry", "Ian", "Jack", "Jacob", "Jake",
    "James", "Jamie", "Jane", "Jason", "Jay", "Jennifer", "Jeremy", "Jessica", "John",
    "Jonathan", "Jordan", "Joseph", "Joshua", "Justin", "Kate", "Kelly", "Kevin", "Kyle",
    "Laura", "Leon", "Lewis", "Lisa", "Louis", "Luke", "Madison", "Marco", "Marcus", "Maria",
    "Mark", "Martin", "Mary", "Matthew", "Max", "Michael", "Michelle", "Morgan", "Patrick",
    "Paul", "Peter", "Prince", "Rachel", "Richard", "River", "Robert", "Roman", "Rose", "Ruby",
    "Russell", "Ryan", "Sarah", "Scott", "Sean", "Simon", "Stephen", "Steven", "Sullivan",
    "Taylor", "Thomas", "Tyler", "Victoria", "Warren", "William",
)


def role_template(template: str, order: str) -> str:
    """A paper template with named roles: [S1] and [IO] in the first clause, [S2] later."""
    t = template.removesuffix(" [A]")
    t = t.replace("[B]", "[S1]", 1).replace("[A]", "[IO]", 1).replace("[B]", "[S2]")
    if order == "ABBA":  # IO named first: swap the first clause's two names
        t = t.replace("[S1]", "[TMP]", 1).replace("[IO]", "[S1]", 1).replace("[TMP]", "[IO]", 1)
    return t


@register_task
class IOI(Task):
    """Indirect object identification with the ABC corruption (Wang et al. 2022)."""

    name = "ioi"
    single_token_spans = True

    def propose(self, rng: random.Random) -> Pair:
        order = rng.choice(("ABBA", "BABA")) if self.config.ioi_order == "both" else self.config.ioi_order
        index = rng.randrange(len(BABA_TEMPLATES))
        template = role_template(BABA_TEMPLATES[index], order)
        io, s, x, y, z = rng.sample(NAMES, 5)
        scene = {"PLACE": rng.choice(PLACES), "OBJECT": rng.choice(OBJECTS)}
        clean, cs = fill(template, {"IO": io, "S1": s, "S2": s, **scene})
        corrupt, ks = fill(template, {"IO": x, "S1": y, "S2": z, **scene})
        return Pair(
            clean, corrupt, answer=f" {io}", wrong=f" {s}",
            clean_spans={"io": cs["IO"][0], "s1": cs["S1"][0], "s2": cs["S2"][0]},
            corrupt_spans={"io": ks["IO"][0], "s1": ks["S1"][0], "s2": ks["S2"][0]},
            swaps=((f" {io}", f" {x}"), (f" {s}", f" {y}"), (f" {s}", f" {z}")),
            info={"templates": index, "orders": order, "io_names": io, "s_names": s},
        )
