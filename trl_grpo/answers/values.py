"""Which part of an answer is its value: lead-in phrases and units come off, hedges earn nothing.

    python -c "from trl_grpo.answers.values import value_of; print(value_of('The answer is 12 apples', 'apples?'))"

The accuracy reward credits an answer only when all of it is the value. Before any equivalence
check (trl_grpo/answers/equivalence.py), ``value_of`` reads the words in an answer:
  * a lead-in phrase at the start comes off: ``The answer is 12``, ``Answer: 12``, ``so 12``;
  * units at the end come off: a word of ``UNITS`` (length, area, volume, mass, time, money,
    angles, percent, temperature, speed; singular or plural; ``\\text{ cm}^2``, ``km/h``), or a
    noun of the problem (``12 apples`` when the problem asks about apples), or a harmless
    closing such as ``in total``;
  * ``and`` / ``or`` between two values join the parts of one answer (``2 or 3`` is the set
    {2, 3}, so it equals the gold ``2, 3`` and not the gold ``2``);
  * any other word changes the value and the answer earns nothing (``None``): negation
    (``not 12``), comparison (``12 or more``, ``at least 12``), arithmetic in words
    (``12 minus one``, ``12 squared``), judgement (``12 is wrong``), hedging
    (``approximately 12``), a number in words. ``HEDGE_WORDS`` lists the common ones; a word
    that is neither a unit nor a noun of the problem is refused just the same.
  * a relation the gold does not have (``\\neq 12``, ``\\approx 12``, ``\\geq 12``, ``\\pm 12``)
    earns nothing, and so does a question mark (``12?``);
  * in other languages (hedges.py): their words for "not", "about", "more than", ... earn
    nothing; other words in another script count as units only where the problem holds them
    (``12 яблок`` for a problem about яблок, ``12个`` for one that counts 个).
Around the boxes (``hedged_around_boxes``), arithmetic attached to a box changes its value too:
``\\boxed{12} + 1``, ``\\boxed{12}0``, ``-\\boxed{12}``, ``\\boxed{12}^2`` earn nothing.
Words the gold itself contains are part of the value (``\\text{odd}``, ``2ab``), and letters
glued to a digit are variables (``2xy``), as are single letters (``x = 12`` stays credited).
``numeric_sides`` names the sides of an equation that hold no variable: equivalence.py requires
each to equal the gold, so ``13 = 12`` earns nothing while ``2 \\times 6 = 12`` does.

A leaf: no torch, no math-verify; tests/data/reward_selftest.json holds the labelled cases.
"""

from __future__ import annotations

import re

from trl_grpo.answers.attached import attached, or_beside_a_number
from trl_grpo.answers.hedges import fold, foreign_hedge, question, unspaced


def _listed(text: str) -> list[str]:
    """The space-separated words of a long literal (kept as prose so the lists read easily)."""
    return text.split()


# Units credited after a number, singular and plural (lower case; "L" and "mL" are matched lower too).
_UNIT_ROOTS = _listed(
    "mm cm dm m km meter metre centimeter centimetre millimeter millimetre kilometer kilometre in inch ft foot "
    "feet yd yard mi mile nm sq square cubic unit "  # length and area, "square units"
    "mg g kg gram kilogram milligram lb lbs pound oz ounce ton tonne "  # mass
    "ms s sec second min minute h hr hour day week month year yr decade century "  # time
    "ml l liter litre milliliter millilitre gal gallon quart pint cup cc "  # volume
    "mph kph kmh kmph knot "  # speed
    "dollar cent yuan euro rupee yen usd eur gbp cny inr rs rmb buck "  # money
    "degree deg radian rad percent percentage celsius fahrenheit kelvin"  # angle, share, temperature
)
UNITS = frozenset(_UNIT_ROOTS + [u + "s" for u in _UNIT_ROOTS] + ["inches", "centuries", "feet", "pence"])
# Closings that say nothing about the value.
_HARMLESS_TAIL = frozenset(("total", "altogether", "all", "in", "exactly", "only"))
# Words that change (or hedge) a value; refused even when the problem contains them.
HEDGE_WORDS = frozenset(
    _listed(
        "not no non never neither nor or and than more less fewer greater larger smaller bigger higher lower least "
        "most at over under above below exceed exceeds exceeding plus minus times divided multiplied squared cubed "
        "root half double twice thrice triple quarter third wrong incorrect false true correct approximately approx "
        "about around roughly nearly almost circa maybe perhaps possibly probably likely either between to up until "
        "till from except excluding including minimum maximum power factorial reciprocal inverse negative positive "
        "opposite zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand "
        "million billion guess isn aren wasn weren doesn didn cannot unlikely"
    )
)
# Function words: never a unit, even when the problem uses them.
_STOP = frozenset(
    _listed(
        "is are was were be been being am the an this that these those it its he she they we you his her their our "
        "your my there here what which who whom whose how many much each every any some such so then thus hence "
        "therefore because since if else when where why with without by for on as into onto per has have had do does "
        "did can could will would should shall may might must answer final result value solution"
    )
)
# Letter runs that are mathematics, not words.
_MATH_NAMES = frozenset(
    _listed(
        "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg exp lim max min gcd lcm mod det pi "
        "inf infty sqrt frac"
    )
)
_LEAD_IN = re.compile(
    r"^\s*(?:(?:so|thus|hence|therefore)\b[\s,:]*)?"
    r"(?:(?:(?:the|my|our)\s+)?(?:final\s+)?(?:answer|result|value|solution)\s*(?:is\b|=|:)"
    r"|there\s+(?:are|is|were|was)\b|it\s+is\b|we\s+get\b|which\s+is\b)?[\s,:]*",
    re.I,
)
_TEXT_WRAP = re.compile(r"\\(?:text|textrm|textbf|textit|mbox|mathrm|textnormal)\s*\{([^{}]*)\}")
_SPACES = re.compile(r"\\[,;:! ]|\\q?quad\b|~|\$")
_TOKEN = re.compile(r"\\[A-Za-z]+|[^\W\d_]+|\d+(?:[.,]\d+)*|\s+|.", re.S)
# Relations the gold may have but an answer may not add: LaTeX commands as whole words (``\\le`` is not
# the start of ``\\left``, ``\\pm`` not of ``\\pmod``) and their Unicode signs.
_RELATION = re.compile(
    r"\\(?:neq|ne|approx|geqslant|leqslant|geq|ge|leq|le|lt|gt|simeq|sim|pm|mp|not|gg|ll)(?![A-Za-z])"
    r"|[<>≈≠≥≤±∓≳≲≫≪]"
)


def _relations(text: str | None) -> set[str]:
    return {m.group(0) for m in _RELATION.finditer(text or "")}


_BRACED_POWER = re.compile(r"\^\s*\{\s*([23])\s*\}")
_GREEK = re.compile(
    r"\\(?:alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|iota|kappa|lambda|mu|nu|xi|rho|"
    r"sigma|tau|upsilon|phi|varphi|chi|psi|omega|Gamma|Delta|Theta|Lambda|Xi|Sigma|Phi|Psi|Omega)\b"
)


def words_of(text: str | None) -> set[str]:
    """Lower-case words of ``text``: runs of two or more Latin letters (LaTeX commands left out) and
    runs of letters of any other script.

    >>> sorted(words_of(r"How many \\text{apples} does \\frac{1}{2} Ann have?"))
    ['ann', 'apples', 'does', 'have', 'how', 'many']
    >>> sorted(words_of("Сколько яблок?"))
    ['сколько', 'яблок']
    """
    found = re.finditer(r"(?<![\\A-Za-z])[^\W\d_]+", text or "")
    return {w for w in (m.group(0).lower() for m in found) if not w.isascii() or len(w) >= 2}


def problem_nouns(problem: str | None) -> frozenset[str]:
    """Words of the problem that may follow a number as its unit (with plural / singular forms),
    function words and ``HEDGE_WORDS`` left out."""
    out = set()
    for w in words_of(problem):
        if unspaced(w):  # no spaces between words: any short piece of the run may be the noun (个, 苹果)
            out |= {w[i : i + n] for n in range(1, 7) for i in range(len(w) - n + 1)}
        else:
            out |= {w, w + "s", w + "es", w[:-1] if w.endswith("s") else w, w[:-2] if w.endswith("es") else w}
    return frozenset(w for w in out - HEDGE_WORDS - _STOP if foreign_hedge(w) is None)


def _normalise(answer: str) -> str:
    """Text wrappers opened (``\\text{ cm}`` -> `` cm ``), LaTeX spacing and ``$`` removed, ``^{2}`` as ``^2``."""
    return _BRACED_POWER.sub(r"^\1", _SPACES.sub(" ", _TEXT_WRAP.sub(lambda m: f" {m.group(1)} ", answer)))


def _is_unit(word: str, nouns: frozenset[str]) -> bool:
    w = word.lower()
    return w in UNITS or w in nouns


def _strip_units(tokens: list[str], nouns: frozenset[str]) -> list[str]:
    """``tokens`` without trailing units, unit powers (``^2``), ``/``, ``per``, brackets and harmless
    closings, when at least one unit is among them and a value is left before them. A one-letter unit
    (``5 m``) counts only after a number or a fraction and a space (``2 x`` stays a product)."""
    end, saw_unit = len(tokens), False

    def previous(k: int) -> str:  # the last non-space token before index k
        return next((t for t in reversed(tokens[:k]) if not t.isspace()), "")

    while end > 0:
        t = tokens[end - 1]
        if t.isspace() or t in ".,;:!()/[]":
            end -= 1
        elif len(t) == 1 and t.isalpha() and t.isascii():
            after_value = previous(end - 1)[-1:].isdigit() or previous(end - 1) == "}"
            compound = end >= 2 and tokens[end - 2] == "/"  # km/h
            if not (t.lower() in UNITS and end >= 2 and (compound or tokens[end - 2].isspace() and after_value)):
                break
            saw_unit, end = True, end - 1
        elif t.isalpha() and (_is_unit(t, nouns) or t.lower() in _HARMLESS_TAIL or t.lower() == "per"):
            saw_unit, end = saw_unit or _is_unit(t, nouns), end - 1
        elif t in ("2", "3") and end >= 2 and tokens[end - 2] == "^" and previous(end - 2).isalpha():
            end -= 2  # cm^2, m^3
        else:
            break
    core = tokens[:end]
    return core if saw_unit and "".join(core).strip() else tokens


def _math_word(word: str, before: str, gold_words: set[str]) -> bool:
    """Whether a letter run is mathematics: a known function name, a word of the gold, or letters glued
    to a digit (``2xy``)."""
    w = word.lower()
    greek = all("\u0370" <= c <= "\u03ff" for c in w)  # π, α, θ written as letters are mathematics
    return w in _MATH_NAMES or w in gold_words or greek or (before[-1:].isdigit() and w not in UNITS and w.isascii())


def value_of(answer: str, problem: str | None = None, gold: str | None = None) -> str | None:
    """``answer`` reduced to its value, or None when its words or relations change the value.

    Args:
        answer: the predicted answer (a box's content or an answer block's text).
        problem: the problem text; its nouns count as units.
        gold: the gold answer; its own words and relations are part of the value.

    Returns:
        The answer unchanged when nothing comes off; else its value with the lead-in, units and
        closings removed (``and``/``or`` between values become ``;``); None for a hedge.

    >>> value_of("12"), value_of("The answer is 12 apples.", "How many apples?"), value_of("12 is wrong")
    ('12', '12', None)
    """
    gold_words = words_of(_normalise(gold or ""))
    if _relations(answer) - _relations(gold) or question(answer, gold or "") or foreign_hedge(answer, gold or ""):
        return None
    folded = fold(answer)
    if folded != answer and value_of(folded, problem, gold) is None:  # "Ｎｏｔ 12", "n\u200bot 12", "nοt 12"
        return None
    text = _normalise(answer)
    lead = _LEAD_IN.match(text).end() if words_of(text) - gold_words else 0
    parts, separators = _split_parts(_TOKEN.findall(text[lead:]), gold_words)
    nouns = problem_nouns(problem)
    cores = [_strip_units(part, nouns) for part in parts]
    for core in cores:
        for before, t in zip(["", *core], core, strict=False):
            if t[:1].isalpha() and (len(t) >= 2 or not t.isascii()) and not _math_word(t, before, gold_words):
                return None  # a word that is not a unit: it changes the value
    values = ["".join(core).strip().rstrip(".").strip() for core in cores]
    if not all(values):
        return None
    if not lead and all(c is p for c, p in zip(cores, parts, strict=True)) and ";" not in separators:
        return answer  # nothing came off: the answer as written
    return "".join(v + sep for v, sep in zip(values, [*separators, ""], strict=True))


def _split_parts(tokens: list[str], gold_words: set[str]) -> tuple[list[list[str]], list[str]]:
    """The parts of a list answer (split at top-level commas, and at ``and`` / ``or`` between two
    values), and the separator after each part (``, `` or ``;``)."""
    parts, separators, current, depth = [], [], [], 0
    for i, t in enumerate(tokens):
        depth += (t in "{([") - (t in "})]") if len(t) == 1 else 0
        joiner = t.lower() in ("and", "or") and t.lower() not in gold_words
        if depth == 0 and (t == "," or joiner) and "".join(current).strip() and "".join(tokens[i + 1 :]).strip():
            parts.append(current)
            separators.append(", " if t == "," else ";")
            current = []
        else:
            current.append(t)
    parts.append(current)
    return parts, separators


BOX_MARK = "\x00"  # stands for a box in the text around an answer's boxes


def hedged_around_boxes(skeleton: str, gold: str | None = None) -> bool:
    """Whether the text around an answer's boxes (``skeleton``: the answer block with each box
    replaced by ``BOX_MARK``) changes their value: a word of ``HEDGE_WORDS`` or a relation the gold
    lacks (``not \\boxed{12}``, ``\\boxed{12} is wrong``, ``\\approx \\boxed{12}``). ``and`` / ``or``
    hedge only beside a number outside the boxes (``\\boxed{12} or 13``); between two boxes they join
    the parts of one answer. Other words (``Part 1:``) are commentary.

    >>> hedged_around_boxes(f"The answer is {BOX_MARK}."), hedged_around_boxes(f"not {BOX_MARK}")
    (False, True)
    """
    if _relations(skeleton) - _relations(gold) or attached(skeleton, BOX_MARK) or or_beside_a_number(skeleton):
        return True
    if foreign_hedge(skeleton, gold or "", near="0123456789" + BOX_MARK):
        return True
    text, gold_words = _normalise(fold(skeleton)), words_of(_normalise(gold or ""))
    for m in re.finditer(r"(?<![\\A-Za-z])[A-Za-z]{2,}(?![A-Za-z])", text):
        word = m.group(0).lower()
        if word in ("and", "or"):
            # joining two boxes, or commentary ("for part (a) and"); an alternative when a number is beside it
            before, after = text[: m.start()].rstrip()[-1:], text[m.end() :].lstrip()[:1]
            if not (before.isdigit() or after.isdigit()):
                continue
        if word in HEDGE_WORDS and word not in gold_words:
            return True
    return False


def numeric_sides(answer: str) -> list[str]:
    """The sides of an equation that hold no variable (each must equal the gold), or [] when the
    answer is not one equation (no ``=``, or several parts).

    >>> numeric_sides("13 = 12"), numeric_sides("x = 12"), numeric_sides(r"2 \\times 6 = 12")
    (['13', '12'], ['12'], ['2 \\\\times 6', '12'])
    >>> numeric_sides("p = 5, q = 2")
    []
    """
    depth, sides, start, top_level_list = 0, [], 0, False
    for i, ch in enumerate(answer):
        depth += ch in "{([" and 1 or 0
        depth -= ch in "})]" and 1 or 0
        if depth == 0 and ch in ",;":
            top_level_list = True
        if depth == 0 and ch == "=" and answer[i - 1 : i] not in ("<", ">", "!", "\\"):
            sides.append(answer[start:i])
            start = i + 1
    if not sides or top_level_list:
        return []
    sides.append(answer[start:])
    numeric = []
    for side in (s.strip() for s in sides):
        bare = _GREEK.sub("x", side)
        bare = re.sub(r"\\[A-Za-z]+", "", bare)
        if side and not re.search(r"[A-Za-z]", bare) and re.search(r"\d", bare):
            numeric.append(side)
    return numeric
