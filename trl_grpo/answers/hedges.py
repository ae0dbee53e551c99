"""Words beyond English that change an answer's value, and marks that turn it into a question or a
sum: what values.py refuses inside and around a box, whatever the language of the completion.

    python -c "from trl_grpo.answers.hedges import foreign_hedge; print(foreign_hedge('не 12'))"

Small models trained on multilingual data answer in the problem's language, or drift into another
one. ``не 12`` (Russian), ``不是12`` (Chinese), ``12ではない`` (Japanese), ``12이 아니다`` (Korean),
``ليس 12`` (Arabic), ``12 नहीं`` (Hindi) and ``nicht 12`` (German) all say "not 12"; ``约12`` and
``ungefähr 12`` say "about 12". A careful grader gives them nothing, as values.py does for the
English words of ``HEDGE_WORDS``. The lists hold negation, approximation, comparison, doubt and
"wrong"; words for "or" are kept apart (``FOREIGN_OR``): between two boxes they join one answer's
parts, beside a number they offer an alternative. No torch, no regex engine beyond ``re``.
"""

from __future__ import annotations

import re
import unicodedata

# Scripts written without spaces between words: a term is found inside a run of letters.
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")

# Per language: negation, approximation, comparison, doubt, "wrong". Lower case.
_FOREIGN = {
    "ru": "не нет ни около примерно приблизительно почти больше меньше более менее свыше неверно неправильно "
    "возможно наверное может вероятно минимум максимум",
    "uk": "не ні немає близько приблизно майже більше менше неправильно можливо",
    "zh": "不 非 没 無 无 约 約 大约 大概 左右 可能 也许 或许 以上 以下 多于 少于 超过 至少 至多 最多 最少 近似 错 錯",
    "ja": "ない 違う 違い 約 およそ 多分 たぶん 以上 以下 未満 超 くらい ぐらい 程度 誤り 間違",
    "ko": "아니 아닙 아닌 아님 않 약 대략 아마 이상 이하 미만 초과 정도 쯤 틀",
    "ar": "ليس ليست لا لم غير حوالي تقريبا تقريباً ربما أكثر أقل خطأ خاطئ",
    "hi": "नहीं नही न लगभग करीब क़रीब शायद अधिक कम गलत ग़लत",
    "el": "όχι δεν περίπου σχεδόν πάνω κάτω λάθος ίσως",
    "de": "nicht kein keine keiner keinen ungefähr etwa circa ca rund fast knapp mehr weniger über unter falsch "
    "vielleicht wahrscheinlich mindestens höchstens",
    "fr": "pas non ne environ presque plus moins faux fausse peut-être probablement approximativement moins au-moins",
    "es": "no ni aproximadamente casi más menos falso quizás quizá probablemente alrededor unos",
    "it": "non circa quasi più meno falso sbagliato forse probabilmente almeno",
    "pt": "não nao aproximadamente quase mais menos falso errado talvez provavelmente cerca",
    "nl": "niet geen ongeveer bijna meer minder fout misschien waarschijnlijk",
    "pl": "nie około prawie więcej mniej może błędnie",
    "tr": "değil yaklaşık belki fazla az yanlış",
    "sv": "inte ungefär nästan mer mindre kanske fel",
    "id": "bukan tidak sekitar kira-kira mungkin salah",
    "vi": "không khoảng chừng có lẽ sai",
    "th": "ไม่ ประมาณ ราว อาจ ผิด",
    "he": "לא אינו אינה בערך אולי",
    "hu": "nem körülbelül talán hibás",
    "fi": "ei noin ehkä väärin",
    "cs": "ne není přibližně asi možná",
}
# Words of the lists above that are parts of ordinary words in unspaced scripts: not hedges there.
_NOT_HEDGES = ("不同", "不等", "不定", "约分", "约数", "約数", "約分", "非负", "非零", "非正", "약수", "약분")
FOREIGN_HEDGES = frozenset(w for words in _FOREIGN.values() for w in words.split())
# "or" in other languages: an alternative beside a number, a joiner between boxes.
FOREIGN_OR = frozenset(
    ("oder", "ou", "o", "или", "либо", "або", "ή", "lub", "veya", "eller")  # spaced scripts
    + ("或", "或者", "または", "또는", "أو", "या")
)
# Marks that make an answer a question: ASCII, fullwidth, Arabic, Greek, Spanish opening, emoji.
QUESTION_MARKS = ("?", "？", "؟", "\u037e", "¿", "⁇", "❓", "❔", "‽", "﹖")


def words(text: str) -> list[str]:
    """Runs of letters and their combining marks (so Hindi's नहीं and Arabic's تقريباً stay whole).

    >>> words("नहीं 12, ungefähr")
    ['नहीं', 'ungefähr']
    """
    out, current = [], []
    for ch in text:
        if unicodedata.category(ch)[0] in "LM":
            current.append(ch)
        elif current:
            out.append("".join(current))
            current = []
    return out + (["".join(current)] if current else [])


def foreign_hedge(text: str, allowed: str = "", near: str = "0123456789\x00") -> str | None:
    """The first foreign hedge term in ``text`` next to a value, that ``allowed`` (the gold, say) does
    not hold, or None. Next to a value: at most one word (spaced scripts) or two characters
    (Chinese, Japanese, Korean, Thai) from a digit or a box (``near`` holds what counts: digits and
    values.BOX_MARK), so ``由以上计算可知，答案为 \\boxed{12}`` ("from the above") and ``El número más
    pequeño es \\boxed{3}`` ("the smallest") stay commentary while ``不是12`` and ``nicht \\boxed{12}`` do not.

    >>> foreign_hedge("не 12"), foreign_hedge("答案是12"), foreign_hedge("大约12")
    ('не', None, '大约')
    >>> foreign_hedge("由以上计算可知，答案为 12")  # "from the above": commentary
    """
    tokens = _tokens(text, near)
    values = [i for i, (kind, _) in enumerate(tokens) if kind == "value"]
    for i, (kind, word) in enumerate(tokens):
        if kind != "word" or not values or min(abs(i - v) for v in values) > 2:
            continue
        lower = word.lower()
        if lower in FOREIGN_HEDGES and lower not in allowed.lower():
            return lower
        if _UNSPACED.search(word):
            found = _unspaced_hedge(text, word, near, allowed)
            if found:
                return found
    return None


def _tokens(text: str, near: str) -> list[tuple[str, str]]:
    """Words and values in order: ("word", w) or ("value", digits/box); punctuation and spaces dropped."""
    out, current = [], []
    for ch in text:
        if unicodedata.category(ch)[0] in "LM":
            current.append(ch)
            continue
        if current:
            out.append(("word", "".join(current)))
            current = []
        if ch in near and (not out or out[-1][0] != "value"):
            out.append(("value", ch))
    return out + ([("word", "".join(current))] if current else [])


def _unspaced_hedge(text: str, word: str, near: str, allowed: str) -> str | None:
    """A hedge term inside an unspaced run, within two characters of a digit or box in ``text``."""
    for term in _UNSPACED_TERMS:
        start = word.find(term)
        while start >= 0:
            if term not in allowed and not any(n in word and term in n for n in _NOT_HEDGES):
                at = text.find(word) + start
                window = text[max(0, at - 3) : at + len(term) + 3]
                if any(c in near for c in window):
                    return term
            start = word.find(term, start + 1)
    return None


# Letters of Cyrillic and Greek drawn like Latin ones, mapped where they sit inside a Latin word (nοt).
_LOOK_ALIKE = str.maketrans("аеорсухіјѕԁӏοαρνιτυκ", "aeopcyxijsdloapvituk")


def fold(text: str) -> str:
    """``text`` as a reader sees it: compatibility forms unified (fullwidth ``Ｎｏｔ``; superscripts
    and subscripts kept, ``2³`` is not ``23``), invisible characters removed, look-alike letters
    inside a Latin word made Latin. Whole words of other scripts (``ρ``, ``все``) stay as written.

    >>> fold("Ｎｏｔ 12"), fold("n\u200bot"), fold("nοt ρ = 2³")
    ('Not 12', 'not', 'not ρ = 2³')
    """
    kept = []
    for ch in text:
        if unicodedata.category(ch) == "Cf" or 0xFE00 <= ord(ch) <= 0xFE0F:
            continue  # zero-width spaces and joiners, soft hyphens, bidi marks, variation selectors
        tag = unicodedata.decomposition(ch)
        kept.append(ch if tag.startswith(("<super>", "<sub>")) else unicodedata.normalize("NFKC", ch))
    return re.sub(r"[^\W\d_]+", _latinise, "".join(kept))


def _latinise(match) -> str:
    word = match.group(0)
    return word.translate(_LOOK_ALIKE) if re.search(r"[A-Za-z]", word) else word


def unspaced(word: str) -> bool:
    """Whether ``word`` is written in a script without spaces (Chinese, Japanese, Korean)."""
    return _UNSPACED.search(word) is not None


def question(text: str, allowed: str = "") -> bool:
    """Whether ``text`` holds a question mark that ``allowed`` does not (``12?`` asks, it does not answer).

    >>> question("12?"), question("12"), question("12？")
    (True, False, True)
    """
    return any(q in text and q not in allowed for q in QUESTION_MARKS)


# Longest first, so 大约 is named before 约.
_UNSPACED_TERMS = sorted((t for t in FOREIGN_HEDGES if _UNSPACED.search(t)), key=len, reverse=True)
