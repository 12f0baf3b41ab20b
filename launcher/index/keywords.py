"""Keyword matching, shared by the index (postings built once, at write time) and search (BM25).

Tokens are unicode words (letters and digits; `_` and punctuation split), NFC-normalised and
casefolded. A mixed word also yields its parts, so `TaxForm2023` gives `taxform2023`, `tax`,
`form`, `2023` and matches either spelling. Scripts written without spaces (Chinese, Japanese;
Korean too, whose words take endings) would make a whole sentence one word, so a run of their
characters also yields its overlapping pairs (`天気予報` gives `天気`, `気予`, `予報`), the usual
answer of search engines without a dictionary (Lucene's CJK bigrams): a query's word is found
inside any sentence that holds it, and more pairs in common rank higher.

Terms are stored as 64-bit BLAKE2b hashes, never strings: postings are then plain NumPy arrays
that memory-map, merge and look up with `searchsorted`, and a collision (odds ~ n^2 / 2^65) only
adds a spurious keyword match.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
U16 = npt.NDArray[np.uint16]
Mask = npt.NDArray[np.bool_]

_WORD = re.compile(r"[^\W_]+")
# Han, kana and Hangul: CJK Unified Ideographs and extension A, compatibility ideographs, the
# supplementary planes' ideographs, hiragana, katakana (and its halfwidth forms), Hangul syllables.
_CJK = re.compile(
    "[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
    "\uff66-\uff9f\U00020000-\U0003134f]+"
)

# The tokens' version, part of an index's identity: a new one rebuilds the postings from the
# stored piece texts, keeping every vector (2: CJK runs also give their character pairs).
TOKENS_VERSION = 2
K1 = 1.2  # BM25 term-frequency saturation; the usual values (Robertson, Lucene)
B = 0.75  # BM25 document-length normalisation


def tokenize(text: str) -> list[str]:
    """Words of `text`, NFC + casefold, with the parts of camelCase and letter/digit words added."""
    out: list[str] = []
    for word in _WORD.findall(unicodedata.normalize("NFC", text)):
        out.append(word.casefold())
        if not word.isascii() and has_cjk(word):
            whole = out[-1]
            out.extend(t for t in _cjk_tokens(word) if t != whole)
        # Lowercase words and plain numbers have no parts; skip the regex for them (most words).
        elif not (word.islower() or word.isdigit()):
            parts = _parts(word)
            if len(parts) > 1:
                out.extend(p.casefold() for p in parts)
    return out


def _cjk_tokens(word: str) -> list[str]:
    """The tokens of a word with CJK characters in it: each CJK run's overlapping pairs (a lone
    character as itself), and the other runs (`Python` of `Python入門`) as words of their own."""
    out: list[str] = []
    at = 0
    for m in _CJK.finditer(word):
        if m.start() > at:
            out.extend(tokenize(word[at : m.start()]))
        run = m.group()
        out.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
        at = m.end()
    if at < len(word):
        out.extend(tokenize(word[at:]))
    return out


def _parts(word: str) -> list[str]:
    """Split at lower->Upper and letter<->digit boundaries (any script)."""
    parts: list[str] = []
    start = 0
    for i in range(1, len(word)):
        a, b = word[i - 1], word[i]
        if a.isdigit() != b.isdigit() or (a.islower() and b.isupper()):
            parts.append(word[start:i])
            start = i
    parts.append(word[start:])
    return parts


def query_length(text: str) -> int:
    """How many words a query has: its words between spaces, or, for text written without them
    (Chinese, Japanese), one per two CJK characters, whichever is more."""
    cjk = sum(map(len, _CJK.findall(text)))
    return max(len(text.split()), cjk // 2)


def has_cjk(text: str) -> bool:
    """Whether text holds Chinese, Japanese or Korean characters (whose words are short)."""
    return _CJK.search(text) is not None


def query_terms(text: str) -> list[str]:
    """Distinct tokens of a query, in order."""
    return list(dict.fromkeys(tokenize(text)))


_RUN = re.compile(r"\w+")


def query_runs(text: str) -> list[list[list[str]]]:
    """The query's runs of word characters (`MS_BIND`, `readFile`, `tax_form_2023`, `notes`), each
    as its `_`-separated words, each word as its tokens: the whole word first, then its parts. A run
    with more than one token is one name joined up, not any one of its parts."""
    runs = _RUN.findall(unicodedata.normalize("NFC", text))
    return [[tokenize(w) for w in _WORD.findall(run)] for run in runs]


def name_key(path: str) -> str:
    """The file name's distinct tokens joined as ' a b c ', for word-boundary matching by substring."""
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    return " " + " ".join(dict.fromkeys(tokenize(base))) + " "


@lru_cache(maxsize=1 << 18)
def term_hash(term: str) -> int:
    """A stable 64-bit hash of a token (Python's own hash() changes per process)."""
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class Postings:
    """An inverted index over the rows of one segment: term hash -> (rows, term frequencies)."""

    terms: U64  # sorted, distinct
    starts: I64  # terms[i]'s postings are entries[starts[i]:starts[i+1]] (or to the end)
    entries: U32  # shape (n_postings, 2): row, tf (rows ascending within a term)
    doclen: U32  # tokens per row

    def lookup(self, h: int) -> U32:
        """The (row, tf) entries of one term hash; empty when absent."""
        i = int(np.searchsorted(self.terms, np.uint64(h)))
        if i >= len(self.terms) or int(self.terms[i]) != h:
            return self.entries[:0]
        end = int(self.starts[i + 1]) if i + 1 < len(self.starts) else len(self.entries)
        return self.entries[int(self.starts[i]) : end]


def build_postings(texts: Sequence[str]) -> Postings:
    """Postings for a batch of texts, row i = texts[i]."""
    hashes: list[int] = []
    rows: list[int] = []
    tfs: list[int] = []
    doclen = np.zeros(len(texts), dtype=np.uint32)
    for row, text in enumerate(texts):
        tokens = tokenize(text)
        doclen[row] = len(tokens)
        for tok, count in Counter(tokens).items():
            hashes.append(term_hash(tok))
            rows.append(row)
            tfs.append(count)
    return _from_triples(
        np.array(hashes, dtype=np.uint64),
        np.array(rows, dtype=np.uint32),
        np.minimum(np.array(tfs, dtype=np.int64), 65535).astype(np.uint32),
        doclen,
    )


def merge_postings(parts: Sequence[tuple[Postings, I64]]) -> Postings:
    """Merge segments' postings; `new_row[r]` is row r's row in the merged segment, -1 to drop it."""
    hs: list[U64] = []
    rs: list[U32] = []
    fs: list[U32] = []
    n_out = max((int(new_row.max(initial=-1)) + 1 for _, new_row in parts), default=0)
    doclen = np.zeros(n_out, dtype=np.uint32)
    for post, new_row in parts:
        counts = np.diff(np.append(post.starts, len(post.entries)))
        h = np.repeat(post.terms, counts)
        target = new_row[post.entries[:, 0]]
        keep = target >= 0
        hs.append(h[keep])
        rs.append(target[keep].astype(np.uint32))
        fs.append(post.entries[keep, 1])
        live = new_row >= 0
        doclen[new_row[live]] = post.doclen[live]
    return _from_triples(
        np.concatenate(hs) if hs else np.zeros(0, np.uint64),
        np.concatenate(rs) if rs else np.zeros(0, np.uint32),
        np.concatenate(fs) if fs else np.zeros(0, np.uint32),
        doclen,
    )


def _from_triples(h: U64, rows: U32, tf: U32, doclen: U32) -> Postings:
    order = np.lexsort((rows, h))
    h = h[order]
    entries = np.empty((len(h), 2), dtype=np.uint32)
    entries[:, 0] = rows[order]
    entries[:, 1] = tf[order]
    terms, starts = np.unique(h, return_index=True)
    return Postings(
        terms=terms.astype(np.uint64), starts=starts.astype(np.int64), entries=entries, doclen=doclen
    )


def bm25_idf(n_docs: int, df: int) -> float:
    """BM25 inverse document frequency (the non-negative form used by Lucene)."""
    return float(np.log1p((n_docs - df + 0.5) / (df + 0.5)))
