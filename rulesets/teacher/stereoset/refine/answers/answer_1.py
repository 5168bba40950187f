"""Write runs/refine/results_1.jsonl: the teacher's hand-written answer to refinement round 1."""

import json
from pathlib import Path

KEY = "refine round 1@7070a12449db0c88"

NAMES_RELIGION = {
    "name": "names_religion",
    "type": "bool",
    "values": [],
    "definition": "True if the text names a religion, its followers, its scripture, its clergy, its figures or its places of worship: Muslim, Islam, mosque, Quran, Allah, hijab, Christian, Catholic, church, Bible, Jesus, Jewish, Jew, synagogue, Hindu, Brahmin, Buddhist. Arab and Middle Eastern are peoples, not religions.",
    "value": "true",
}
SUBJECT_RELIGIOUS = {
    "name": "subject_group",
    "type": "one_of",
    "values": ["religious_group", "nationality_or_place", "occupation", "gender_or_family", "none"],
    "definition": "Which kind of group the person or people the text describes are identified by.",
    "value": "religious_group",
}
NO_NATIONALITY = {
    "name": "names_nationality_or_ethnicity",
    "type": "bool",
    "values": [],
    "definition": "True if the text names a people by nationality or ethnic group.",
    "value": "false",
}
NO_COUNTRY = {
    "name": "names_country_or_region",
    "type": "bool",
    "values": [],
    "definition": "True if the text names a country, region or city of a country.",
    "value": "false",
}
COUNTRY = {**NO_COUNTRY, "value": "true"}
NO_OCCUPATION = {
    "name": "names_occupation",
    "type": "bool",
    "values": [],
    "definition": "True if the text names a job or occupation.",
    "value": "false",
}
NO_RELIGION = {**NAMES_RELIGION, "value": "false"}

answer = {
    "analysis": (
        "Seven of the eight errors cite religion_1 although the text names no religion at all: "
        "a country (Italy, Vietnam, Yemen), a nationality (Persian, Columbian), a job "
        "(mathematician) or only 'himself'. The rules that fit those texts exist (race_1, race_2, "
        "gender_3, profession_1), but race_1 and race_2 also ask for subject_group, the hardest "
        "feature to judge, and religion_1 is stated so loosely that the model treats it as a "
        "catch-all. The eighth error cites race_9, a rule with one supporting example that calls "
        "a job holder race; the model applied it to 'a white policeman', which profession_2 "
        "already labels profession. The edits make religion_1 require an explicit religion word "
        "and no people or place, let a named country or region decide race without the "
        "subject_group judgement, and remove race_9."
    ),
    "edits": [
        {
            "action": "replace",
            "rule_id": "religion_1",
            "rule": {
                "title": "A named religion or its followers",
                "condition": (
                    "the text names a religion or its followers, such as Muslim, Christian, Jewish "
                    "or Hindu, the person described is identified by that religion, and no "
                    "nationality, ethnic group, country or region is named"
                ),
                "label": "religion",
                "features": [SUBJECT_RELIGIOUS, NAMES_RELIGION, NO_NATIONALITY, NO_COUNTRY],
            },
            "reason": (
                "Answer religion only when a religion word such as Muslim, Christian, Jewish, "
                "Hindu, church or Bible is in the text; a country, a nationality, a job or "
                "himself/herself is never a religion. Fixes train_slice.jsonl:15, :17, :19, :20, "
                ":22 and :25, where no religion word occurs."
            ),
        },
        {
            "action": "replace",
            "rule_id": "race_1",
            "rule": {
                "title": "A country or region is named",
                "condition": (
                    "the text names a country or region, or a person from one, and names no job "
                    "and no religion"
                ),
                "label": "race",
                "features": [COUNTRY, NO_OCCUPATION, NO_RELIGION],
            },
            "reason": (
                "A text that names a country or region and no job or religion is about that "
                "place and its people, even when the person is a friend, she or he. Fixes "
                "train_slice.jsonl:13, :15, :19 and :25 and keeps :27 race."
            ),
        },
        {
            "action": "drop",
            "rule_id": "race_9",
            "reason": (
                "race_9 rests on one example and contradicts profession_2 and profession_5, which "
                "label a job holder profession whatever their colour or origin; the model applied "
                "it to a white policeman (train_slice.jsonl:30). Dropping it also shortens the "
                "rule list."
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
out = Path(__file__).resolve().parent.parent / "results_1.jsonl"
out.write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
print(f"wrote {out}")
