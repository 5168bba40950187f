"""Write runs/refine/results_2.jsonl: the teacher's hand-written answer to refinement round 2."""

import json
from pathlib import Path

KEY = "refine round 2@9565b5cb8d329d51"


def feature(name: str, value: str, definition: str) -> dict:
    """A bool feature use; pldc keeps the declared definition of an existing feature."""
    return {"name": name, "type": "bool", "values": [], "definition": definition, "value": value}


NATIONALITY = "True if the text names a people by nationality or ethnic group."
OCCUPATION = "True if the text names a job or occupation."
RELIGION = "True if the text names a religion, its followers, its scripture, its clergy or its places of worship."
COUNTRY = "True if the text names a country, region or city of a country."

answer = {
    "analysis": (
        "Five of the eight errors cite religion_1 for texts that name a nationality or ethnic "
        "group (Hispanic, Columbian, Persian, Ukrainian) and no religion. The rule that fits them, "
        "race_2, also asks for subject_group, the feature the model judges worst; in round 1 the "
        "same simplification of race_1 (a named country, no job, no religion) raised the held-out "
        "score, so race_2 gets the same treatment. The psychologist error (train_slice.jsonl:4) "
        "is the job case: profession_1 also depends on subject_group, so it is restated with "
        "plain word tests. train_slice.jsonl:13 cites profession_4, a one-example rule about a "
        "relative with a job, although the text names no job; once profession_1 covers every "
        "named job, profession_4 only adds a rule the model can misapply. The Cameroon error "
        "(train_slice.jsonl:1) cites race_9; its removal was tried in round 1 and lowered the "
        "held-out score, so it is left alone."
    ),
    "edits": [
        {
            "action": "replace",
            "rule_id": "race_2",
            "rule": {
                "title": "A nationality or ethnic group is named",
                "condition": (
                    "the text names a people by nationality or ethnic group, such as Hispanic, "
                    "Persian or Ukrainian, and names no job and no religion"
                ),
                "label": "race",
                "features": [
                    feature("names_nationality_or_ethnicity", "true", NATIONALITY),
                    feature("names_occupation", "false", OCCUPATION),
                    feature("names_religion", "false", RELIGION),
                ],
            },
            "reason": (
                "A nationality or ethnic word with no job and no religion word means the text is "
                "about that people, so the answer is race, never religion. Fixes "
                "train_slice.jsonl:6, :9, :11 and :19."
            ),
        },
        {
            "action": "replace",
            "rule_id": "profession_1",
            "rule": {
                "title": "A job is named without a nationality",
                "condition": (
                    "the text names a job or occupation and names no nationality, ethnic group, "
                    "country or region"
                ),
                "label": "profession",
                "features": [
                    feature("names_occupation", "true", OCCUPATION),
                    feature("names_nationality_or_ethnicity", "false", NATIONALITY),
                    feature("names_country_or_region", "false", COUNTRY),
                ],
            },
            "reason": (
                "A text that names a job such as psychologist, musician, butcher or prisoner, and "
                "no nationality or country, is about that profession, even when he or she is "
                "used. Fixes train_slice.jsonl:4 and keeps :7, :26 and :31 profession."
            ),
        },
        {
            "action": "drop",
            "rule_id": "profession_4",
            "reason": (
                "profession_4 rests on one example and repeats profession_1 for a relative with a "
                "job; the model cited it for a text with no job (train_slice.jsonl:13). Dropping it "
                "shortens the rule list."
            ),
        },
    ],
}

line = {
    "key": KEY,
    "response": {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": json.dumps(answer, ensure_ascii=False)}]},
                "finishReason": "STOP",
            }
        ]
    },
}
out = Path(__file__).resolve().parent.parent / "results_2.jsonl"
out.write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
print(f"wrote {out}")
