"""Evaluation of the V2X language model: what it predicts of a record's QoS features.

For every QoS feature of a test record (``datasets.v2x.QOS_FEATURES``) the model sees the
record up to and including ``<feature> =`` (so everything before it, side information and
earlier QoS values included) and continues greedily until the separator; the continuation
is parsed as a number. Reported per feature over the records where it parsed: the mean
relative error ``|predicted - true| / |true|`` and the mean absolute error (in the feature's
unit; the relative error is ill-conditioned for values near zero, such as an SNR in dB);
and how many did not parse (counted apart, not as an error of 100 %). Token top-1 accuracy and perplexity come
from :func:`experiments.engine.evaluate_language_model`.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from datasets.v2x import QOS_FEATURES
from datasets.v2x_tokenizer import parse_record

MAX_VALUE_TOKENS = 12


def _number(text: str) -> float | None:
    try:
        return float(text.replace(" ", ""))
    except ValueError:
        return None


@torch.no_grad()
def qos_prediction_errors(model, tokenizer, records: list[str], *, features=QOS_FEATURES,
                          device="cpu", verbose: bool = True) -> dict:
    """``{feature: {"relative_error", "parsed", "records"}}`` over ``records`` (texts)."""
    model.eval()
    errors = {f: [] for f in features}
    failed = {f: 0 for f in features}
    stops = {tokenizer.separator_id, tokenizer.time_id}
    separator = tokenizer.separator + " "
    for text in tqdm(records, desc="QoS", leave=False, disable=not verbose):
        groups = text.split(separator)
        truth = parse_record(text)
        for i, group in enumerate(groups):
            key = group.partition(" = ")[0]
            if key not in errors or _number(truth[key]) is None:
                continue
            prompt = separator.join(groups[:i] + [f"{key} ="])
            tokens = torch.tensor([tokenizer.encode(prompt)], device=device)
            out = model.generate(tokens, MAX_VALUE_TOKENS, stop_token=tokenizer.separator_id)
            new = out[0, tokens.shape[1]:].tolist()
            cut = next((j for j, t in enumerate(new) if t in stops), len(new))
            predicted, true = _number(tokenizer.decode(new[:cut])), _number(truth[key])
            if predicted is None:
                failed[key] += 1
            else:
                errors[key].append((abs(predicted - true) / max(abs(true), 1e-6),
                                    abs(predicted - true)))
    return {f: {"relative_error": float(np.mean([e[0] for e in errors[f]])) if errors[f] else None,
                "absolute_error": float(np.mean([e[1] for e in errors[f]])) if errors[f] else None,
                "parsed": len(errors[f]), "records": len(errors[f]) + failed[f]}
            for f in features}
