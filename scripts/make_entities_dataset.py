"""Writes the demo's English entity-extraction dataset: examples/demo/data/entities-{train,heldout}.json.

Sentences about people, organisations and places, made from the templates and names below (a fixed seed:
the files are reproducible), in LLaMA-Factory's alpaca format with a system prompt; each answer is the JSON
list of the sentence's entities, `[{"label": "person"|"organisation"|"place", "text": ...}]`, in the order
they appear. The held-out split shares no name and no template with the training split, so an adapter can
only answer it by having learned the task, not the sentences.

    python scripts/make_entities_dataset.py      # rewrites both files
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "examples" / "demo" / "data"
SYSTEM = "You extract named entities."
INSTRUCTION = "Find the people, organisations and places in this sentence."


def names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",")]


TRAIN_NAMES = {
    "person": names(
        "Alice Moreau, Ben Okafor, Carla Mendes, David Lindqvist, Elena Petrova, Farid Haddad, "
        "Grace Kim, Hugo Brandt, Ines Duarte, James Whitfield, Keiko Tanaka, Liam O'Connor, "
        "Maria Rossi, Nikhil Rao, Olivia Hart, Pedro Alvarez, Quinn Murphy, Rosa Jimenez"
    ),
    "organisation": names(
        "Northwind Bank, Helios Energy, the Red Cross, Blue River Foods, Apex Robotics, "
        "the World Bank, Greenfield University, Orion Airlines, the City Council, Vantage Media, "
        "Silverline Rail, Harbor Hospital"
    ),
    "place": names(
        "Paris, Nairobi, Toronto, Lisbon, Osaka, Cairo, Melbourne, Oslo, Chicago, Lima, Dublin, "
        "Hamburg, Seoul, Marseille"
    ),
}
HELDOUT_NAMES = {
    "person": ["Sofia Laurent", "Tomasz Nowak", "Amara Diallo", "Victor Chen", "Hannah Schulz", "Ravi Patel"],
    "organisation": ["Crescent Telecom", "the Science Museum", "Falcon Logistics", "Riverside College"],
    "place": ["Madrid", "Vancouver", "Accra", "Prague", "Kyoto", "Edinburgh"],
}
# {person}, {organisation}, {place}: one entity each; {person2} another person.
TRAIN_TEMPLATES = [
    "{person} joined {organisation} in {place} last spring.",
    "{person} met {person2} at a conference in {place}.",
    "{organisation} opened a new office in {place}.",
    "{person} flew to {place} on Monday.",
    "{organisation} hired {person} as its new director.",
    "In {place}, {person} gave a talk about climate policy.",
    "{person} left {organisation} after ten years.",
    "{organisation} announced record profits this quarter.",
    "{person} and {person2} founded {organisation}.",
    "The festival in {place} was opened by {person}.",
    "{organisation} moved its headquarters from {place} to {place2}.",
    "{person} studied law in {place} before joining {organisation}.",
    "The weather in {place} was mild all week.",
    "{person} wrote a book about {place}.",
]
HELDOUT_TEMPLATES = [
    "{person} signed a contract with {organisation} in {place}.",
    "Yesterday {person} visited {place} with {person2}.",
    "{organisation} is building a factory near {place}.",
    "{person} was elected to lead {organisation}.",
]
TRAIN_SIZE = 160
HELDOUT_SIZE = 12


def sentence(template: str, names: dict[str, list[str]], rng: random.Random) -> dict[str, str]:
    picks: dict[str, str] = {}
    for slot, label in (("person", "person"), ("person2", "person"), ("organisation", "organisation"),
                        ("place", "place"), ("place2", "place")):  # fmt: skip
        if "{" + slot + "}" in template:
            taken = set(picks.values())
            picks[slot] = rng.choice([n for n in names[label] if n not in taken])
    text = template.format(**picks)
    text = text[0].upper() + text[1:]  # "the Red Cross ..." opens a sentence as "The Red Cross ..."
    picks = {slot: value if value in text else value[0].upper() + value[1:] for slot, value in picks.items()}
    labels = {"person": "person", "person2": "person", "organisation": "organisation", "place": "place",
              "place2": "place"}  # fmt: skip
    found = sorted(((text.index(value), labels[slot], value) for slot, value in picks.items()))
    entities = [{"label": label, "text": value} for _, label, value in found]
    return {"system": SYSTEM, "instruction": INSTRUCTION, "input": text, "output": json.dumps(entities)}


def split(templates: list[str], names: dict[str, list[str]], size: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    records, seen = [], set()
    while len(records) < size:
        record = sentence(templates[len(records) % len(templates)], names, rng)
        if record["input"] not in seen:
            seen.add(record["input"])
            records.append(record)
    rng.shuffle(records)
    return records


def main() -> None:
    for name, records in (
        ("entities-train.json", split(TRAIN_TEMPLATES, TRAIN_NAMES, TRAIN_SIZE, seed=1)),
        ("entities-heldout.json", split(HELDOUT_TEMPLATES, HELDOUT_NAMES, HELDOUT_SIZE, seed=6)),
    ):
        (OUT / name).write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n")
        print(f"{OUT / name}: {len(records)} records")


if __name__ == "__main__":
    main()
