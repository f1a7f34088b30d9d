"""Subject–verb agreement (Linzen et al. 2016, "Assessing the Ability of LSTMs to Learn
Syntax-Sensitive Dependencies"; templates after Marvin & Linzen 2018, "Targeted Syntactic
Evaluation of Language Models"; the causal analysis of Finlayson et al. 2021, "Causal Analysis
of Syntactic Agreement Mechanisms in Neural Language Models").

"The author that the guards like" → " is" (not " are"). The subject is singular or plural at
random, possibly separated from the verb by a prepositional phrase or an object relative
clause whose attractor noun has its own number. The corrupt prompt flips only the subject's
number ("The authors that the guards like"), and is kept only when both forms are the same
number of tokens. ``answers`` is the verb form agreeing with the clean subject, ``wrong`` the
other form (= the corrupt prompt's answer). ``meta``: ``subject_positions`` (per pair, the
prompt positions of the subject noun's tokens), ``singular`` (the clean subject's number),
``subjects`` and ``templates``.
"""

from __future__ import annotations

import random

from interplab.tasks.base import Pair, Task
from interplab.tasks.registry import register_task
from interplab.tasks.tokens import fill

TEMPLATES = (
    "The [SUBJ]",
    "The [SUBJ] near the [ATTR]",
    "The [SUBJ] behind the [ATTR]",
    "The [SUBJ] next to the [ATTR]",
    "The [SUBJ] that the [ATTR] [VERB]",
)
VERBS = {True: " is", False: " are"}  # singular subject → " is"

# (singular, plural) animate nouns, as in Marvin & Linzen's lists.
SUBJECTS = (
    ("author", "authors"), ("pilot", "pilots"), ("surgeon", "surgeons"), ("farmer", "farmers"),
    ("manager", "managers"), ("customer", "customers"), ("officer", "officers"),
    ("teacher", "teachers"), ("senator", "senators"), ("dancer", "dancers"),
    ("minister", "ministers"), ("architect", "architects"), ("lawyer", "lawyers"),
    ("doctor", "doctors"), ("student", "students"), ("writer", "writers"), ("painter", "painters"),
    ("driver", "drivers"), ("singer", "singers"), ("player", "players"), ("engineer", "engineers"),
    ("nurse", "nurses"), ("judge", "judges"), ("soldier", "soldiers"), ("worker", "workers"),
)
ATTRACTORS = (
    ("guard", "guards"), ("chef", "chefs"), ("parent", "parents"), ("child", "children"),
    ("friend", "friends"), ("neighbor", "neighbors"), ("actor", "actors"), ("banker", "bankers"),
    ("clerk", "clerks"), ("baker", "bakers"), ("boy", "boys"), ("girl", "girls"),
)
# Verbs of the relative clause, agreeing with the attractor: (singular, plural).
RC_VERBS = (("likes", "like"), ("hates", "hate"), ("admires", "admire"), ("loves", "love"),
            ("knows", "know"))


@register_task
class SubjectVerbAgreement(Task):
    """Agreement of " is"/" are" with the subject across attractors; corrupt flips the subject."""

    name = "sva"

    def propose(self, rng: random.Random) -> Pair:
        index = rng.randrange(len(TEMPLATES))
        forms = rng.choice(SUBJECTS)
        singular = rng.random() < 0.5
        attr_singular = rng.random() < 0.5
        attr = rng.choice(ATTRACTORS)[0 if attr_singular else 1]
        verb = rng.choice(RC_VERBS)[0 if attr_singular else 1]
        subj, flipped = (forms[0], forms[1]) if singular else (forms[1], forms[0])
        clean, cs = fill(TEMPLATES[index], {"SUBJ": subj, "ATTR": attr, "VERB": verb})
        corrupt, ks = fill(TEMPLATES[index], {"SUBJ": flipped, "ATTR": attr, "VERB": verb})
        return Pair(
            clean, corrupt, answer=VERBS[singular], wrong=VERBS[not singular],
            clean_spans={"subject": cs["SUBJ"][0]}, corrupt_spans={"subject": ks["SUBJ"][0]},
            swaps=((f" {subj}", f" {flipped}"),),
            info={"singular": singular, "subjects": subj, "templates": index},
        )
