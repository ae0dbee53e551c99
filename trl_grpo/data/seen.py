"""Which test problems a run trained on, including copies in disguise: the contamination check of
every evaluation and of training's own eval split.

    python -c "from trl_grpo.data.seen import fold_problem; print(fold_problem('Ｗhat is 2+2 ?'))"

A test problem is left out when its text matches a training problem's, either as written (spaces
collapsed, case folded: ``splits.normalise_problem``) or after folding away what does not change
the problem for a reader (``fold_problem``): Unicode compatibility forms (NFKC: fullwidth digits
and letters, composed and decomposed accents, ligatures), zero-width and other invisible
characters, spacing before punctuation and inside brackets, and letters of other scripts that look
like Latin ones inside a Latin word (Cyrillic ``а`` in ``Whаt``; a Greek ``ρ`` standing alone is a
variable and stays, and superscripts stay: ``2³`` is not ``23``). The count of left-out problems says how each was
matched, so a surprising number can be traced. The carve of the test split (splits.py) keeps its
own normalisation, so which rows are test rows never changes. A leaf: no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trl_grpo.answers.hedges import fold
from trl_grpo.data.splits import normalise_problem

SAME_TEXT, FOLDED = "same text", "after Unicode folding"

_SPACE_BEFORE = re.compile(r"\s+([.,;:!?%)\]}])")
_SPACE_AFTER = re.compile(r"([(\[{$])\s+")


def fold_problem(text) -> str:
    """A problem's text with what a reader does not see as a difference folded away.

    >>> fold_problem("What is ２＋２ ?") == fold_problem("what is 2+2?")
    True
    >>> fold_problem("Wh\\u200bat is 2+2?") == fold_problem("What is 2+2?"), fold_problem("Whаt") == "what"
    (True, True)
    >>> fold_problem("What is 2³?") == fold_problem("What is 23?"), fold_problem("все") == fold_problem("всё")
    (False, False)
    """
    folded = fold(str(text or "")).casefold()  # answers/hedges.py: NFKC but super/subscripts, no invisibles
    folded = " ".join(folded.split())
    return _SPACE_AFTER.sub(r"\1", _SPACE_BEFORE.sub(r"\1", folded))


@dataclass(frozen=True)
class SeenProblems:
    """The training problems of a run, as written and folded, for matching test problems against."""

    exact: frozenset
    folded: frozenset

    @classmethod
    def of(cls, problems) -> SeenProblems:
        problems = list(problems)
        return cls(frozenset(map(normalise_problem, problems)), frozenset(map(fold_problem, problems)))

    def match(self, problem) -> str | None:
        """How ``problem`` matches a training problem (``SAME_TEXT`` or ``FOLDED``), or None."""
        if normalise_problem(problem) in self.exact:
            return SAME_TEXT
        return FOLDED if fold_problem(problem) in self.folded else None

    def __len__(self) -> int:
        return len(self.exact)


def contaminated(problems, seen: SeenProblems) -> dict[int, str]:
    """Index -> how it matched, for each of ``problems`` that a training problem matches.

    >>> seen = SeenProblems.of(["What is 2+2?", "Name the cаpital of France ."])
    >>> contaminated(["what is 2+2? ", "What is 3+3?", "Name the capital of France."], seen)
    {0: 'same text', 2: 'after Unicode folding'}
    """
    found = ((i, seen.match(p)) for i, p in enumerate(problems))
    return {i: how for i, how in found if how}
