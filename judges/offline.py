"""The built-in offline judge: a deterministic stand-in for an LLM judge, with no network.

**It looks only at surface features, never at meaning.** It does not read the argument, check
facts, follow the prompt or notice that an essay is off-topic except through the way the text
looks. It exists so that cjflow runs end to end with no API key (the embedded default, the
examples, tests and benchmarks), and it is good enough to order essays whose quality shows on
the surface, as it usually does for very weak versus very strong writing. Do not use it to
grade real students.

Each essay gets a score (:func:`surface_score`), a weighted sum of generic features, each
roughly in ``[0, 1]``:

* length: log of the word count, saturating (about 40 words -> 0, about 320 words -> 1);
* vocabulary richness: MTLD (McCarthy & Jarvis, 2010), which, unlike a plain type/token
  ratio, does not fall simply because a text is longer;
* mean sentence length inside a sensible band (12-24 words);
* paragraphing (body paragraphs, a short first-line title excluded);
* punctuation variety (``, ; : ? " ( -`` and apostrophes) and commas per sentence;
* share of long words (7+ letters);
* discourse markers ("however", "therefore", "for example", "in conclusion", ...);

minus penalties for ALL-CAPS words, repeated characters ("sooo", "!!!"), sentences that
start in lower case, very long run-on sentences, misspellings and text-speak from a small
built-in list (including contractions missing their apostrophe: "dont", "thats"), and the
pronoun "i" in lower case.

:func:`offline_verdict` compares two scores. The higher one wins; the confidence is a
sigmoid of the score gap (0.5 for a tie, towards 1 for a large gap); the justification names
the features that made the difference. Exact ties (for example identical scores of different
texts) are broken by a hash of the two texts that does not depend on their order, so the
judge is position-neutral: swapping A and B always swaps the winner (the only exception is two
identical texts, where "which position" is the only thing that differs and the hash of the
text picks one). Everything is a pure function of the texts: the same pair always gets the
same verdict.
"""

from __future__ import annotations

import hashlib
import math
import re
from functools import lru_cache

__all__ = ["MODEL_VERSION", "offline_verdict", "surface_features", "surface_score"]

MODEL_VERSION = "surface-features-v1"

MAX_JUSTIFICATION = 200

# --------------------------------------------------------------------------- word lists

DISCOURSE_MARKERS: tuple[str, ...] = (
    "however", "therefore", "moreover", "furthermore", "in addition", "additionally",
    "for example", "for instance", "such as", "consequently", "as a result", "thus", "hence",
    "nevertheless", "nonetheless", "although", "even though", "whereas", "on the other hand",
    "in contrast", "by contrast", "in conclusion", "to conclude", "to sum up", "in summary",
    "overall", "firstly", "secondly", "thirdly", "first of all", "to begin with", "finally",
    "in particular", "indeed", "of course", "similarly", "likewise", "admittedly",
    "in other words", "that is why", "this means", "rather than", "provided that", "unless",
)

# Common English misspellings, text-speak, and contractions written without an apostrophe.
# Deliberately small and generic: a word list, not a spell checker.
MISSPELLINGS: frozenset[str] = frozenset(
    ["accomodate", "acheive", "acheived", "acomplish", "adress", "agressive", "alot", "allready", "alredy", "amature", "aparent", "apparantly", "arguement", "athelete", "awfull", "basicly", "beacuse", "becasue", "becouse", "becuase", "becuse", "begining", "beleive", "belive", "benifit", "bizzare", "borring", "buisness", "calender", "catagory", "cemetary", "cheif", "collegue", "comming", "commited", "completly", "concious", "definately", "definatly", "definetly", "dilema", "dissapoint", "embarass", "enuff", "enviroment", "everbody", "excercise", "existance", "expecially", "experiance", "explaination", "familar", "facinating", "favrite", "finaly", "foriegn", "fourty", "freind", "freinds", "futher", "goverment", "gaurd", "happend", "harrass", "hieght", "homwork", "humourous", "ignorence", "imediately", "independant", "interupt", "intresting", "knowlege", "lenght", "lern", "lerning", "libary", "lisence", "maintainance", "millenium", "mischievious", "neccessary", "necesary", "noticable", "occassion", "occured", "occurence", "ofcourse", "oppurtunity", "opinon", "peice", "persue", "posession", "potatos", "prefered", "probaly", "probly", "publically", "realy", "reccomend", "recieve", "recieved", "refered", "relevent", "religous", "rember", "remeber", "resturant", "rythm", "scedule", "seperate", "sieze", "shedule", "similiar", "sincerly", "speach", "stoped", "succesful", "sucess", "suprise", "tatoo", "tecnology", "terible", "thier", "threshhold", "tomorow", "tommorow", "truely", "twelth", "tyrany", "untill", "usally", "usualy", "vaccum", "wether", "wich", "wierd", "writting", "dont", "cant", "didnt", "doesnt", "isnt", "wasnt", "werent", "arent", "couldnt", "wouldnt", "shouldnt", "hasnt", "havent", "thats", "whats", "im", "ive", "youre", "theyre", "lol", "omg", "idk", "tho", "cuz", "gonna", "wanna", "ur", "ya"]
)

# Two-word slips that a word list cannot see one word at a time.
MISSPELLED_PHRASES: tuple[str, ...] = (
    "would of", "could of", "should of", "to much", "now days", "more then", "a lot of of",
)

# ----------------------------------------------------------------------------- parsing

_WORD = re.compile(r"[A-Za-z]+(?:['\u2019][A-Za-z]+)*")
_SENT_SPLIT = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+")
_REPEATED = re.compile(r"([A-Za-z])\1{2,}|([!?.])\2{2,}|!!|\?\?")
_TERMINATORS = ".!?"


def _paragraphs(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        return []
    parts = re.split(r"\n\s*\n", text)
    if len(parts) == 1 and "\n" in text:
        parts = text.split("\n")  # one paragraph per line when there are no blank lines
    return [" ".join(p.split()) for p in parts if p.strip()]


def _split_title(paragraphs: list[str]) -> tuple[str | None, list[str]]:
    """A short first paragraph with at most one sentence, followed by more text, is a title."""
    if len(paragraphs) >= 2:
        first = paragraphs[0]
        n = len(_WORD.findall(first))
        inner = first.rstrip(_TERMINATORS + " ")
        if 0 < n <= 12 and not any(c in inner for c in _TERMINATORS):
            return first, paragraphs[1:]
    return None, paragraphs


def _sentences(paragraph: str) -> list[str]:
    return [s for s in _SENT_SPLIT.split(paragraph) if _WORD.search(s)]


def _mtld_pass(tokens: list[str], threshold: float = 0.72) -> float:
    factors = 0.0
    types: set[str] = set()
    count = 0
    for tok in tokens:
        count += 1
        types.add(tok)
        if len(types) / count <= threshold:
            factors += 1
            types, count = set(), 0
    if count:
        ttr = len(types) / count
        factors += (1 - ttr) / (1 - threshold)
    return len(tokens) / factors if factors > 0 else float(len(tokens))


def _mtld(tokens: list[str]) -> float:
    """Measure of textual lexical diversity, mean of a forward and a backward pass."""
    if not tokens:
        return 0.0
    return (_mtld_pass(tokens) + _mtld_pass(tokens[::-1])) / 2


def _clip(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo if x < lo else min(x, hi)


# ---------------------------------------------------------------------------- features

# name -> (weight, phrase used in justifications, "more is better" for raw display)
WEIGHTS: dict[str, float] = {
    "length": 2.0,
    "vocabulary": 1.0,
    "sentence_length": 1.0,
    "paragraphs": 1.0,
    "punctuation": 0.5,
    "commas": 0.5,
    "long_words": 1.0,
    "markers": 1.5,
    # penalties (features are >= 0 and subtracted)
    "all_caps": 1.0,
    "repeated_chars": 1.0,
    "lowercase_starts": 1.5,
    "run_ons": 1.5,
    "misspellings": 2.0,
    "lowercase_i": 1.0,
}
PENALTIES = frozenset(
    {"all_caps", "repeated_chars", "lowercase_starts", "run_ons", "misspellings", "lowercase_i"}
)


@lru_cache(maxsize=4096)
def _analyse(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """(normalised features, raw counts) for one text; cached because judges see texts often."""
    title, paras = _split_title(_paragraphs(text))
    body = " ".join(paras)
    words = _WORD.findall(body)
    n = len(words)
    lower = [w.lower().replace("\u2019", "'") for w in words]
    sentences = [s for p in paras for s in _sentences(p)]
    sent_lens = [len(_WORD.findall(s)) for s in sentences]
    n_sent = max(len(sentences), 1)
    mean_sent = n / n_sent if n else 0.0

    # length: log-scaled and saturating; very short texts go negative
    length = _clip(math.log(max(n, 1) / 40) / math.log(320 / 40), -1.0, 1.0)

    # vocabulary richness (MTLD ~ 40 for repetitive writing, ~ 100+ for rich writing)
    mtld = _mtld(lower)
    vocabulary = _clip((mtld - 40) / 60)
    if n < 50:  # MTLD is unreliable on tiny texts; do not reward them for it
        vocabulary *= n / 50

    # mean sentence length: full marks in 12-24 words, falling off outside
    if mean_sent < 12:
        sentence_length = _clip(1 - (12 - mean_sent) / 8)
    elif mean_sent > 24:
        sentence_length = _clip(1 - (mean_sent - 24) / 16)
    else:
        sentence_length = 1.0

    n_paras = len(paras)
    paragraphs = _clip((n_paras - 1) / 4)

    marks = 0
    marks += "," in body
    marks += ";" in body
    marks += ":" in body
    marks += "?" in body
    marks += any(q in body for q in ('"', "\u201c", "\u201d"))
    marks += "(" in body
    marks += bool(re.search(r"[A-Za-z]-[A-Za-z]|\s[-\u2013\u2014]\s|\u2014", body))
    marks += bool(re.search(r"[A-Za-z]['\u2019][A-Za-z]", body))
    punctuation = _clip(marks / 6)
    commas = _clip(body.count(",") / n_sent / 1.2)

    long_share = sum(len(w) >= 7 for w in words) / n if n else 0.0
    long_words = _clip((long_share - 0.06) / 0.16)

    joined = " " + " ".join(lower) + " "
    found_markers = sum(f" {m} " in joined for m in DISCOURSE_MARKERS)
    markers = _clip(found_markers / 7)

    # penalties, as rates so that longer texts are not punished for being long
    per100 = 100 / max(n, 20)
    caps = sum(1 for w in words if len(w) >= 2 and w.isupper())
    all_caps = _clip(caps * per100 / 5)
    repeats = len(_REPEATED.findall(text))
    repeated_chars = _clip(repeats / 3)
    starts = [next((c for c in s if c.isalpha()), "") for s in sentences]
    low_starts = sum(1 for c in starts if c.islower())
    lowercase_starts = low_starts / len(starts) if starts else 0.0
    long_sents = sum(1 for k in sent_lens if k > 35)
    run_ons = _clip(sum(k - 35 for k in sent_lens if k > 35) / max(n, 1) * 2) if n else 0.0
    slips = sum(1 for w in lower if w in MISSPELLINGS)
    slips += sum(joined.count(f" {p} ") for p in MISSPELLED_PHRASES)
    misspellings = _clip(slips * per100 / 6)
    small_i = sum(1 for w in words if w == "i" or w.startswith("i'"))
    lowercase_i = _clip(small_i * per100 / 3)

    feats = {
        "length": length,
        "vocabulary": vocabulary,
        "sentence_length": sentence_length,
        "paragraphs": paragraphs,
        "punctuation": punctuation,
        "commas": commas,
        "long_words": long_words,
        "markers": markers,
        "all_caps": all_caps,
        "repeated_chars": repeated_chars,
        "lowercase_starts": lowercase_starts,
        "run_ons": run_ons,
        "misspellings": misspellings,
        "lowercase_i": lowercase_i,
    }
    raw = {
        "words": n,
        "mtld": round(mtld, 1),
        "mean_sentence": round(mean_sent, 1),
        "paragraphs": n_paras,
        "title": title is not None,
        "punctuation_marks": marks,
        "long_word_share": round(long_share, 3),
        "markers": found_markers,
        "all_caps": caps,
        "repeated_chars": repeats,
        "lowercase_starts": low_starts,
        "run_on_sentences": long_sents,
        "misspellings": slips,
        "lowercase_i": small_i,
    }
    return feats, raw


def surface_features(text: str) -> dict[str, float]:
    """Normalised surface features of `text` (penalties as positive numbers), for inspection."""
    return dict(_analyse(text)[0])


def _contributions(text: str) -> dict[str, float]:
    feats = _analyse(text)[0]
    return {k: (-1 if k in PENALTIES else 1) * WEIGHTS[k] * v for k, v in feats.items()}


def surface_score(text: str) -> float:
    """Higher = better-looking essay by surface features only (not meaning). Deterministic."""
    return round(sum(_contributions(text).values()), 9)


# ----------------------------------------------------------------------------- verdict

def _phrase(name: str, w: dict[str, float], l: dict[str, float]) -> str:
    """Short description of why the winner (raw counts `w`) beat the loser (`l`) on `name`."""
    def vs(key: str) -> str:
        return f"{w[key]:g} vs {l[key]:g}"

    return {
        "length": f"length ({vs('words')} words)",
        "vocabulary": f"vocabulary richness (MTLD {vs('mtld')})",
        "sentence_length": f"sentence length ({vs('mean_sentence')} words)",
        "paragraphs": f"paragraphing ({vs('paragraphs')})",
        "punctuation": f"punctuation variety ({vs('punctuation_marks')})",
        "commas": "comma use",
        "long_words": "more long words",
        "markers": f"discourse markers ({vs('markers')})",
        "all_caps": f"fewer ALL-CAPS words ({vs('all_caps')})",
        "repeated_chars": f"fewer repeated chars ({vs('repeated_chars')})",
        "lowercase_starts": f"capitalised sentence starts ({vs('lowercase_starts')} lowercase)",
        "run_ons": f"fewer run-on sentences ({vs('run_on_sentences')})",
        "misspellings": f"fewer misspellings ({vs('misspellings')})",
        "lowercase_i": f"capital 'I' ({vs('lowercase_i')} lowercase)",
    }[name]


def _justify(label: str, winner_text: str, loser_text: str, tie: bool) -> str:
    if tie:
        return f"{label}: surface features tie; picked by a position-neutral hash of the texts."
    cw, cl = _contributions(winner_text), _contributions(loser_text)
    rw, rl = _analyse(winner_text)[1], _analyse(loser_text)[1]
    gains = sorted(
        ((cw[k] - cl[k], k) for k in WEIGHTS if cw[k] - cl[k] > 1e-9),
        key=lambda t: (-t[0], t[1]),
    )
    head = f"{label} looks better on surface features: "
    out = head
    for _, name in gains[:3]:
        piece = _phrase(name, rw, rl)
        candidate = out + ("" if out == head else ", ") + piece
        if len(candidate) + 1 > MAX_JUSTIFICATION:
            break
        out = candidate
    if out == head:
        out = f"{label} looks better on surface features overall"
    return (out + ".")[:MAX_JUSTIFICATION]


def _tiebreak(text_a: str, text_b: str) -> str:
    """Winner for an exact score tie, position-neutral: the text with the smaller hash wins."""
    ha = hashlib.sha256(text_a.encode("utf-8")).hexdigest()
    hb = hashlib.sha256(text_b.encode("utf-8")).hexdigest()
    if ha != hb:
        return "A" if ha < hb else "B"
    # identical texts: positions are all that differs; let the text pick a side
    return "A" if int(ha[-1], 16) % 2 == 0 else "B"


def offline_verdict(text_a: str, text_b: str) -> tuple[str, float, str]:
    """Compare two essays by surface features only.

    Returns ``(winner, confidence, justification)``: winner ``"A"`` or ``"B"``; confidence in
    ``[0.5, 1]``, a sigmoid of the score gap; a justification of at most 200 characters that
    names the features making the difference. Deterministic and position-neutral.
    """
    sa, sb = surface_score(text_a), surface_score(text_b)
    gap = sa - sb
    tie = gap == 0
    winner = _tiebreak(text_a, text_b) if tie else ("A" if gap > 0 else "B")
    confidence = round(1 / (1 + math.exp(-1.2 * abs(gap))), 4)
    confidence = min(max(confidence, 0.5), 1.0)
    w_text, l_text = (text_a, text_b) if winner == "A" else (text_b, text_a)
    return winner, confidence, _justify(winner, w_text, l_text, tie)
