"""Find training rows that duplicate or nearly duplicate validation / test rows.

Two checks on the prompt side of each record (user turns and system prompt; the text of
a text record): exact duplicates after normalising case, punctuation and whitespace, and
near duplicates by TF-IDF cosine similarity at or above a threshold (scikit-learn), the
measure of the book's dataset utilities. The similarity matrix is computed in chunks of
evaluation rows against a sparse train matrix, so memory stays bounded on large sets.
"""

from __future__ import annotations

import re
import unicodedata

CHUNK_ROWS = 256


def prompt_text(record: dict) -> str:
    """What a contamination check compares: the prompt side of the record."""
    if "text" in record:
        return record["text"]
    turns = record["prompt"] if "prompt" in record else record["messages"][:-1]
    return "\n".join(([record["system"]] if record.get("system") else []) + [m["content"] for m in turns])


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def find_contaminated_pairs(train: list[dict], evaluation: dict[str, list[dict]],
                            threshold: float) -> tuple[list[dict], set[int]]:
    """Contaminated evaluation rows and every train row involved.

    Returns one pair per contaminated val / test row (``split``, ``eval_index``, its closest
    ``train_index``, ``similarity``, ``match`` = ``exact`` | ``near``, ``train_matches`` = how
    many train rows match, and both prompts) and the set of all matching train indices.
    """
    train_texts = [prompt_text(r) for r in train]
    exact: dict[str, list[int]] = {}
    for index, text in enumerate(train_texts):
        exact.setdefault(normalise(text), []).append(index)
    pairs, involved, near_candidates = [], set(), {}
    for split, records in evaluation.items():
        for index, record in enumerate(records):
            text = prompt_text(record)
            matches = exact.get(normalise(text))
            if matches:
                involved.update(matches)
                pairs.append(_pair(split, index, matches[0], 1.0, "exact", len(matches), text, train_texts[matches[0]]))
            else:
                near_candidates[(split, index)] = text
    if near_candidates and train_texts and threshold <= 1.0:
        near, near_involved = _near_pairs(train_texts, near_candidates, threshold)
        pairs += near
        involved |= near_involved
    return pairs, involved


def _near_pairs(train_texts: list[str], candidates: dict, threshold: float) -> tuple[list[dict], set[int]]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(lowercase=True, sublinear_tf=True, token_pattern=r"(?u)\b\w+\b")
    keys, texts = list(candidates), list(candidates.values())
    try:
        matrix = vectorizer.fit_transform(train_texts + texts).tocsr()
    except ValueError:  # every text is empty or punctuation: there is no vocabulary to compare
        return [], set()
    train_matrix, eval_matrix = matrix[: len(train_texts)].T.tocsr(), matrix[len(train_texts):]
    pairs, involved = [], set()
    for start in range(0, len(texts), CHUNK_ROWS):
        similarities = (eval_matrix[start:start + CHUNK_ROWS] @ train_matrix).tocsr()
        for offset in range(similarities.shape[0]):
            low, high = similarities.indptr[offset], similarities.indptr[offset + 1]
            values, columns = similarities.data[low:high], similarities.indices[low:high]
            hits = values >= threshold
            if not hits.any():
                continue
            best = int(values.argmax())
            involved.update(int(c) for c in columns[hits])
            split, index = keys[start + offset]
            pairs.append(_pair(split, index, int(columns[best]), float(values[best]), "near", int(hits.sum()),
                               texts[start + offset], train_texts[int(columns[best])]))
    return pairs, involved


def _pair(split: str, eval_index: int, train_index: int, similarity: float, match: str, train_matches: int,
          eval_text: str, train_text: str) -> dict:
    return {"split": split, "eval_index": eval_index, "train_index": train_index,
            "similarity": round(similarity, 4), "match": match, "train_matches": train_matches,
            "eval_prompt": eval_text[:300], "train_prompt": train_text[:300]}


def contamination_summary(pairs: list[dict], n_train: int, evaluation: dict[str, list], involved: set[int],
                          dropped: int, threshold: float) -> dict:
    """Counts for the report and MLflow."""
    return {"threshold": threshold, "train_rows": n_train, "train_rows_matching": len(involved),
            "train_rows_dropped": dropped,
            "exact_pairs": sum(p["match"] == "exact" for p in pairs),
            "near_pairs": sum(p["match"] == "near" for p in pairs),
            **{f"{split}_rows_contaminated": sum(p["split"] == split for p in pairs) for split in evaluation},
            **{f"{split}_share_contaminated": round(sum(p["split"] == split for p in pairs) / max(len(rows), 1), 4)
               for split, rows in evaluation.items()}}
